"""The released artifact, not the checkout: what a user installs is what runs.

The collection is built with ``ansible-galaxy collection build`` from a clean
copy of the files git tracks (what a release holds), installed from the
tarball into an empty collections path, and everything below runs from that
copy alone: ANSIBLE_COLLECTIONS_PATH names only it, Ansible does not scan
sys.path, PYTHONPATH is cleared and the working directory is not the
checkout. A file left out of the build (galaxy.yml's build_ignore) or a path
that only resolves inside a checkout fails here. As for sanity, `git add` a
new file before running it: an untracked module a tracked one imports is
what a release would miss ("No module named ...").
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the .venv's ansible-galaxy, ansible-doc, ansible-playbook
# The parts of a release a user runs: every tracked file under them must be in the artifact.
SHIPPED = ("plugins/", "cli/", "roles/", "playbooks/", "meta/", "ee/")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def _env(collections: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTEST_")) and k != "PYTHONPATH"}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_RETRY_FILES_ENABLED="false", ANSIBLE_DEPRECATION_WARNINGS="true", **extra)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{argv}\nstdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the collections path holding only the installed artifact, the installed collection's root)."""
    work = tmp_path_factory.mktemp("artifact")
    src = work / "src"
    for rel in _tracked():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    env = _env(work / "none")
    _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work / "dist"), str(src)], work, env)
    tarballs = list((work / "dist").glob("doctorq-backup-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    collections = work / "collections"
    _run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections),
          str(tarballs[0])], work, env)
    root = collections / "ansible_collections" / "doctorq" / "backup"
    assert not root.is_symlink() and (root / "MANIFEST.json").is_file()
    return collections, root


def test_every_shipped_file_is_in_the_artifact(installed):
    """A tracked file of a shipped part missing from the tarball (build_ignore too wide) fails here."""
    root = installed[1]
    with open(REPO / "galaxy.yml", encoding="utf-8") as handle:
        ignore = yaml.safe_load(handle).get("build_ignore") or []
    shipped = [p for p in _tracked() if p.startswith(SHIPPED) and not any(fnmatch.fnmatch(p, pat) for pat in ignore)]
    assert len(shipped) > 100, shipped  # the selection itself works
    missing = [p for p in shipped if not (root / p).is_file()]
    assert not missing, f"tracked files missing from the built collection: {missing}"
    files = json.loads((root / "FILES.json").read_text(encoding="utf-8"))["files"]
    assert "cli/backup.py" in {f["name"] for f in files}


def test_ansible_doc_renders_every_installed_module(installed, tmp_path):
    collections, root = installed
    modules = sorted(p.stem for p in (root / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert {"pg_backup", "pg_restore_safe", "s3_lifecycle"} <= set(modules), modules
    names = [f"doctorq.backup.{m}" for m in modules]
    result = _run([str(BIN / "ansible-doc"), "--json", *names], tmp_path, _env(collections))
    docs = json.loads(result.stdout)
    assert sorted(docs) == sorted(names), (sorted(docs), names)
    for name, doc in docs.items():
        assert doc["doc"]["options"], name  # the doc fragments resolved
        assert str(root) in doc["doc"]["filename"], (name, doc["doc"]["filename"])  # the installed copy, not the checkout
    assert "error" not in result.stderr.lower(), result.stderr


def test_commands_start_from_the_installed_copy(installed, tmp_path):
    """What the client role installs on hosts: python -m ...cli.backup / cli.pgbackrest on PYTHONPATH=collections."""
    collections, root = installed
    env = _env(collections, PYTHONPATH=str(collections))
    for command, verb in (("backup", "promote-weekly"), ("pgbackrest", "drill")):
        module = f"ansible_collections.doctorq.backup.cli.{command}"
        result = _run([sys.executable, "-m", module, "--help"], tmp_path, env, timeout=60)
        assert verb in result.stdout, result.stdout
        where = _run([sys.executable, "-c", f"import {module} as m; print(m.__file__)"], tmp_path, env, timeout=60)
        assert where.stdout.strip() == str(root / "cli" / f"{command}.py"), where.stdout


def test_demo_playbook_from_the_installed_copy(installed, tmp_path, pg_server, pg_db, s3_bucket, seaweed, table_digest):
    """playbooks/demo.yml, run as doctorq.backup.demo: backup to disk and S3, list and verify, restore, same rows."""
    collections = installed[0]
    env = _env(collections, DEMO_DIR=str(tmp_path), DEMO_DB=pg_db, DEMO_BUCKET=s3_bucket["bucket"],
               DOCTORQ_SEAWEED_ENDPOINT=seaweed.endpoint_url, DOCTORQ_SEAWEED_ACCESS_KEY=seaweed.access_key,
               DOCTORQ_SEAWEED_SECRET_KEY=seaweed.secret_key, **pg_server.libpq_env(pg_db),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n",
                         encoding="utf-8")
    result = _run([str(BIN / "ansible-playbook"), "-i", str(inventory), "-v", "doctorq.backup.demo"], tmp_path, env)
    assert "running playbook inside collection doctorq.backup" in result.stdout, result.stdout
    assert "failed=0" in result.stdout and "ok=" in result.stdout, result.stdout
    assert table_digest(pg_server, f"{pg_db}_restored") == table_digest(pg_server, pg_db)
    dumps = sorted((tmp_path / "backups").glob(f"{pg_db}_full_*.dump.zst"))
    assert len(dumps) == 1 and Path(f"{dumps[0]}.manifest.json").is_file(), dumps
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket=s3_bucket["bucket"]).get("Contents", [])]
    assert any(k.endswith(f"/{dumps[0].name}.manifest.json") for k in keys), keys
    assert seaweed.secret_key not in result.stdout and pg_server.password not in result.stdout
