"""What a run leaves on disk (issue 11, cases 5 and 9), against the real PostgreSQL, with real signals and OS users.

- Case 5: ``kill -9`` of a run leaves its private directory (the passfile with the password) behind; the next
  run removes it. SIGTERM unwinds the run, which removes its own.
- Case 9: an ad-hoc run as root, then the cron job as ``postgres``, in one backup directory.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from backup_support import (
    COLLECTIONS_DIR, CliProcesses, GatedBin, cli_env, next_second, run_cli, wait_for, write_private,
)

pytestmark = [pytest.mark.faults, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")]

VENV_SITE = glob.glob(os.path.join(os.path.dirname(COLLECTIONS_DIR), "..", ".venv", "lib", "python3*", "site-packages"))


@pytest.fixture
def cli_procs(tmp_path):
    procs = CliProcesses(str(tmp_path))
    yield procs
    procs.close()


def passfile_dirs() -> set[str]:
    """Every private directory holding a passfile, wherever runs put them."""
    return {os.path.dirname(p) for p in glob.glob(os.path.join(tempfile.gettempdir(), "doctorq-pg-*", "pgpass"))}


def backup_config(path: str, pg_server, db: str, backup_dir: str, **extra) -> str:
    params = {**pg_server.params(db), "backup_dir": backup_dir, **extra}
    params.pop("db")
    return write_private(path, json.dumps({**params, "databases": [db]}))


def held_backup(pg_server, db: str, tmp_path, cli_procs) -> tuple[GatedBin, object, str]:
    """The scheduled job with a password, held while pg_dump streams: (gate, process, its private directory)."""
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir, hold=("pg_dump",))
    before = passfile_dirs()
    config = backup_config(str(tmp_path / "backup.json"), pg_server, db, str(tmp_path / "backups"),
                           pg_bin_dir=gate.dir)
    proc = cli_procs.start("backup", "--config", config)
    wait_for(lambda: gate.dumped("pg_dump"), what="pg_dump to stream its output")
    mine = [d for d in passfile_dirs() - before if f"-{proc.pid}-" in os.path.basename(d)]  # named by the run's pid
    assert len(mine) == 1, passfile_dirs() - before
    return gate, proc, mine[0]


def test_kill_9_leaves_the_passfile_the_next_run_removes_it(pg_server, pg_db, tmp_path, cli_procs):
    gate, proc, leftover = held_backup(pg_server, pg_db, tmp_path, cli_procs)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    cli_procs.kill_session(proc)
    with open(os.path.join(leftover, "pgpass"), encoding="utf-8") as handle:
        assert pg_server.password in handle.read()  # what a kill -9 leaves: the password, in clear text

    # the next run (any job with a password) removes what dead runs left
    gate.release()
    config = backup_config(str(tmp_path / "again.json"), pg_server, pg_db, str(tmp_path / "backups"))
    done = run_cli("backup", "--config", config)
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(leftover)


def test_sigterm_unwinds_the_run_and_removes_its_private_directory(pg_server, pg_db, tmp_path, cli_procs):
    _gate, proc, private = held_backup(pg_server, pg_db, tmp_path, cli_procs)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 1
    out, err = cli_procs.output(proc)
    assert "Traceback" not in err
    assert "SIGTERM" in err + out
    assert not os.path.exists(private)
    assert not glob.glob(str(tmp_path / "backups" / f"{pg_db}_full_*.manifest.json"))


def as_postgres(*args: str) -> subprocess.CompletedProcess:
    """The CLI as the postgres OS user, as cron runs it (Debian's python3 with the venv's libraries)."""
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([COLLECTIONS_DIR, *VENV_SITE]), "HOME": "/var/lib/postgresql"}
    return subprocess.run(["runuser", "-u", "postgres", "--", "/usr/bin/python3", "-m",
                           "ansible_collections.doctorq.backup.cli.backup", *args],
                          env=env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
                          check=False)


@pytest.fixture
def postgres_dir():
    """A directory the postgres user can reach (pytest's tmp_path is private to root)."""
    top = tempfile.mkdtemp(prefix="dq-owner-", dir="/tmp")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def test_root_run_then_postgres_cron_run_share_one_backup_directory(pg_server, pg_db, postgres_dir):
    assert VENV_SITE, "the venv's site-packages"
    pg = pwd.getpwnam("postgres")
    backup_dir = os.path.join(postgres_dir, "backups")
    os.mkdir(backup_dir, 0o700)
    os.chown(backup_dir, pg.pw_uid, pg.pw_gid)
    config = backup_config(os.path.join(postgres_dir, "backup.json"), pg_server, pg_db, backup_dir)
    os.chown(config, pg.pw_uid, pg.pw_gid)

    first = run_cli("backup", "--config", config)  # ad hoc, as root (become: true)
    assert first.returncode == 0, first.stderr
    owners = {path: os.stat(path).st_uid for path in glob.glob(os.path.join(backup_dir, "**"), recursive=True)
              + glob.glob(os.path.join(backup_dir, ".*"))}
    assert owners and set(owners.values()) == {pg.pw_uid}, {p: u for p, u in owners.items() if u != pg.pw_uid}

    next_second()  # a backup is named by the second it starts in
    second = as_postgres("backup", "--config", config)  # the nightly cron job
    assert second.returncode == 0, second.stderr
    third = as_postgres("promote-weekly", "--config", config)  # hard links to what root wrote
    assert third.returncode == 0, third.stderr
    manifests = glob.glob(os.path.join(backup_dir, f"{pg_db}_full_*.manifest.json"))
    assert len(manifests) == 2


def test_a_root_owned_lock_file_left_by_an_older_version_is_replaced(pg_server, pg_db, postgres_dir):
    pg = pwd.getpwnam("postgres")
    backup_dir = os.path.join(postgres_dir, "backups")
    os.mkdir(backup_dir, 0o700)
    os.chown(backup_dir, pg.pw_uid, pg.pw_gid)
    lock = os.path.join(backup_dir, f".{pg_db}.lock")
    with open(lock, "w", encoding="utf-8"):
        pass
    os.chmod(lock, 0o600)  # root's, unreadable for postgres: what 0.1 left after a run as root
    config = backup_config(os.path.join(postgres_dir, "backup.json"), pg_server, pg_db, backup_dir)
    os.chown(config, pg.pw_uid, pg.pw_gid)
    done = as_postgres("backup", "--config", config)
    assert done.returncode == 0, done.stderr
    assert os.stat(lock).st_uid == pg.pw_uid


def test_private_directories_of_live_runs_are_never_reaped(tmp_path):
    from ansible_collections.doctorq.backup.plugins.module_utils import runfiles  # pylint: disable=import-outside-toplevel
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # pylint: disable=consider-using-with
    try:
        live = tmp_path / f"doctorq-pg-{sleeper.pid}-{runfiles._host()}-abcdefgh"  # pylint: disable=protected-access
        live.mkdir()
        dead = tmp_path / f"doctorq-pg-{2 ** 22 + 7}-{runfiles._host()}-abcdefgh"  # pylint: disable=protected-access
        dead.mkdir()
        other_host = tmp_path / f"doctorq-pg-{2 ** 22 + 7}-elsewhere-abcdefgh"
        other_host.mkdir()
        assert runfiles.reap_stale(str(tmp_path)) == [str(dead)]
        assert live.exists() and other_host.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
