# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""files_backup / files_restore with real files, real GNU tar and zstd, and real SeaweedFS.

Round trips compare a full snapshot of the tree (every entry's type, mode,
owner, group, content hash or symlink target, hard links, xattrs) with the
original. Failure cases assert what must *not* have happened too: no staging
directory left, no previous tree, the target's snapshot unchanged, nothing
written outside the target. The tests run as root (CI does) so owners can be
set and restored.

Archive tiers (GLACIER) are tested on moto, the only local store with their
semantics; drills (restore_drill with file_set) on SeaweedFS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
import time
from typing import Any

import pytest

# moto_restores is a fixture: imported to be used by name, never referenced
from integration.restore_helpers import GlacierObject, moto_restores  # noqa: F401  # pylint: disable=unused-import
from backup_support import Webhook, next_second

from ansible_collections.doctorq.backup.plugins.module_utils import files_restore_job
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, backup_id, checksum_line, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.files_backup_job import FilesJob, run_files_backup
from ansible_collections.doctorq.backup.plugins.module_utils.files_restore_job import FilesRestoreJob, run_files_restore
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import Hasher

DAY = dt.timedelta(days=1)
OWNER = (4321, 8765)  # uid/gid that exist nowhere: restored by number


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def failed(result: dict[str, Any], *needles: str) -> str:
    assert result.get("failed"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]
    return result["msg"]


def xattrs_supported(path: str) -> bool:
    probe = os.path.join(path, ".xattr-probe")
    open(probe, "w", encoding="utf-8").close()
    try:
        os.setxattr(probe, "user.doctorq", b"1")
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


def make_tree(root: str) -> None:
    """Files of several modes and owners, symlinks (relative, absolute, dangling), a hard link, a sparse file,
    an empty directory, awkward names, and an xattr where the file system has them."""
    os.makedirs(os.path.join(root, "docs", "2025"), exist_ok=True)
    os.makedirs(os.path.join(root, "empty"), exist_ok=True)
    os.makedirs(os.path.join(root, "private"), exist_ok=True)
    specs = {
        "docs/2025/report.pdf": (os.urandom(300_000), 0o640, OWNER),
        "docs/readme.txt": ("Grüße, 東京 – naïve café\n".encode(), 0o644, (0, 0)),
        "docs/with space & 'quote'.txt": (b"odd name\n", 0o600, OWNER),
        "docs/résumé – ü.txt": ("non-ASCII name\n".encode(), 0o644, (0, 0)),
        "private/key.pem": (b"-----BEGIN PRIVATE KEY-----\nxyz\n", 0o400, (0, OWNER[1])),
        "run.sh": (b"#!/bin/sh\necho hi\n", 0o755, (0, 0)),
        "empty-file": (b"", 0o666, OWNER),
    }
    for rel, (data, mode, (uid, gid)) in specs.items():
        path = os.path.join(root, rel)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    os.chmod(os.path.join(root, "private"), 0o700)
    os.chown(os.path.join(root, "private"), *OWNER)
    os.chmod(os.path.join(root, "empty"), 0o2775)  # setgid directory
    os.symlink("2025/report.pdf", os.path.join(root, "docs", "latest.pdf"))
    os.symlink("/etc/hostname", os.path.join(root, "absolute-link"))
    os.symlink("does/not/exist", os.path.join(root, "dangling"))
    os.lchown(os.path.join(root, "dangling"), *OWNER)
    os.link(os.path.join(root, "run.sh"), os.path.join(root, "run-hardlink.sh"))
    with open(os.path.join(root, "sparse.img"), "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
        handle.seek(10 * 1024 * 1024)
        handle.write(b"island of data")
    if xattrs_supported(root):
        os.setxattr(os.path.join(root, "docs", "readme.txt"), "user.doctorq.origin", b"upload-42")
    os.chmod(root, 0o751)


def snapshot(root: str) -> dict[str, tuple]:
    """Every entry below root (and root itself): type, mode, owner, content hash / link target, hard-link group, xattrs."""
    found: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], str] = {}
    for directory, dirs, names in os.walk(root):
        for name in sorted(dirs + names) + ([""] if directory == root else []):
            path = os.path.join(directory, name) if name else directory
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what: Any = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir",)
            else:
                with open(path, "rb") as handle:
                    what = ("file", hashlib.sha256(handle.read()).hexdigest(), st.st_size)
            link_group = None
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                link_group = inodes.setdefault((st.st_dev, st.st_ino), rel)
            xattrs = ()
            if not stat.S_ISLNK(st.st_mode):
                try:
                    xattrs = tuple(sorted((k, os.getxattr(path, k)) for k in os.listxattr(path) if k.startswith("user.")))
                except OSError:
                    pass
            found[rel] = (what, stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None,
                          st.st_uid, st.st_gid, link_group, xattrs)
    return found


def relpaths(root: str) -> set[str]:
    return set(snapshot(root)) - {"."}


def files_job(paths: list[str], backup_dir: str, **extra: Any) -> FilesJob:
    return FilesJob.from_params({"name": extra.pop("name", "app"), "paths": paths, "backup_dir": backup_dir, **extra})


def stray_dirs(parent: str, base: str) -> list[str]:
    """Staging or previous trees a restore left beside the target."""
    return sorted(n for n in os.listdir(parent) if n != base and base in n)


@pytest.fixture
def app(tmp_path) -> str:
    root = str(tmp_path / "srv" / "app")
    os.makedirs(root)
    make_tree(root)
    return root


@pytest.fixture
def backup_dir(tmp_path) -> str:
    return str(tmp_path / "backups")


def s3_keys(s3_option: dict[str, Any]) -> list[str]:
    import boto3  # pylint: disable=import-outside-toplevel

    client = boto3.client("s3", endpoint_url=s3_option["endpoint_url"], aws_access_key_id=s3_option["access_key"],
                          aws_secret_access_key=s3_option["secret_key"], region_name=s3_option.get("region", "us-east-1"))
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3_option["bucket"])
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


# --------------------------------------------------------------------------
# round trips


def test_round_trip_through_s3_and_stock_tools(app, backup_dir, tmp_path, run_module, s3_bucket):
    before = snapshot(app)
    result = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir, "s3": s3_bucket}))
    made = result["backup"]
    assert result["changed"] is True and result["changed_during_backup"] == []
    assert made["source_type"] == "file_set" and made["type"] == "files" and made["id"].startswith("app_files_") and made["path"].endswith(".tar.zst")
    fileset = made["contents"]
    assert fileset["root"] == app and fileset["paths"] == ["."] and fileset["sources"] == [app]
    regular = [k for k, v in before.items() if v[0][0] == "file"]
    assert fileset["files"] == len(regular) == 9
    assert fileset["symlinks"] == 3 and fileset["dirs"] == 5 and fileset["count"] == len(before)
    assert fileset["bytes"] == sum(v[0][2] for k, v in before.items() if v[0][0] == "file" and k != "run-hardlink.sh")
    # the set on disk: archive 0600, checksum files sha256sum/md5sum accept, manifest last
    for suffix in ("", ".md5", ".sha256", ".manifest.json"):
        assert stat.S_IMODE(os.stat(made["path"] + suffix).st_mode) == 0o600
    subprocess.run(["sha256sum", "-c", os.path.basename(made["path"]) + ".sha256"], cwd=backup_dir, check=True,
                   capture_output=True)
    manifest = json.loads(open(made["path"] + ".manifest.json", encoding="utf-8").read())
    assert manifest["source_type"] == "file_set" and manifest["format"] == "tar" and manifest["contents"] == fileset
    # a sample of content hashes, read back from disk: here every regular file (one of the hard-linked pair)
    sample = {item["path"]: item["sha256"] for item in fileset["sample"]}
    assert len(sample) == 8 and "docs/résumé – ü.txt" in sample and "docs/with space & 'quote'.txt" in sample
    for rel, sha in sample.items():
        assert before[rel][0][1] == sha, rel
    # and in S3, beside where database backups go
    day = made["started_at"][:10]
    prefix = f"{s3_bucket.get('prefix', 'postgresql')}/app/{day}/{made['file']}"
    assert {prefix, prefix + ".md5", prefix + ".sha256", prefix + ".manifest.json"} <= set(s3_keys(s3_bucket))
    assert made["s3_uri"] == f"s3://{s3_bucket['bucket']}/{prefix}"

    # restore from S3 (the local copy gone) into a new directory: no confirmation needed
    os.unlink(made["path"])
    target = str(tmp_path / "restored" / "app")
    restored = ok(run_module("files_restore", {"name": "app", "backup_dir": backup_dir, "s3": s3_bucket,
                                               "target": target}))
    assert restored["source"]["location"] == "s3" and restored["checksums"]["verified"] is True
    assert restored["target"] == target and "previous" not in restored and "safety_backup" not in restored
    assert restored["sample_verified"] == 8
    after = snapshot(target)
    assert after == before
    # sparse stays sparse: 64 MiB apparent, a few blocks allocated
    assert os.stat(os.path.join(target, "sparse.img")).st_blocks * 512 < 1024 * 1024
    assert os.listdir(os.path.join(backup_dir, ".restore-work")) == []  # the download is removed
    assert stray_dirs(os.path.dirname(target), "app") == []

    # without this collection: zstd -dc | tar -x gives the same tree
    stock = tmp_path / "stock"
    stock.mkdir()
    archive = str(tmp_path / "from-s3.tar.zst")
    import boto3  # pylint: disable=import-outside-toplevel
    boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], aws_access_key_id=s3_bucket["access_key"],
                 aws_secret_access_key=s3_bucket["secret_key"], region_name="us-east-1").download_file(
        s3_bucket["bucket"], prefix, archive)
    subprocess.run(f"zstd -dc {archive} | tar -x --numeric-owner --xattrs --xattrs-include='*' --acls -C {stock}",
                   shell=True, check=True)  # noqa: S602 - the README's one-liner, on paths of this test
    assert snapshot(str(stock)) == before


def test_restore_in_place_needs_confirmation_keeps_previous_and_a_safety_backup(app, backup_dir, run_module):
    original = snapshot(app)
    made = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir}))["backup"]
    # the application changes its files after the backup
    with open(os.path.join(app, "docs", "readme.txt"), "ab") as handle:
        handle.write(b"edited\n")
    os.unlink(os.path.join(app, "run.sh"))
    with open(os.path.join(app, "new-upload.bin"), "wb") as handle:
        handle.write(b"new")
    modified = snapshot(app)
    parent = os.path.dirname(app)

    # default target: the directory that was backed up; refused without / with a wrong confirmation
    for confirm in ("", "/srv/other", app + "-x"):
        msg = failed(run_module("files_restore", {"name": "app", "backup_dir": backup_dir, "confirm": confirm}),
                     f"confirm={app}", "Nothing was touched")
        assert "non-empty directory" in msg
        assert snapshot(app) == modified and stray_dirs(parent, "app") == []
    assert not os.path.exists(os.path.join(backup_dir, "safety"))

    # check mode: verifies and plans, changes nothing
    plan = ok(run_module("files_restore", {"name": "app", "backup_dir": backup_dir}, check_mode=True))
    assert plan["plan"]["replaces"] is True and plan["plan"]["confirmation_ok"] is False
    assert plan["checksums"]["verified"] is True and snapshot(app) == modified

    result = ok(run_module("files_restore", {"name": "app", "backup_dir": backup_dir, "confirm": app + "/"}))
    assert result["changed"] is True and result["source"]["id"] == made["id"]
    assert snapshot(app) == original
    previous = result["previous"]
    assert previous.startswith(app + ".pre_restore_") and snapshot(previous) == modified
    assert stray_dirs(parent, "app") == [os.path.basename(previous)]
    # the safety backup is a complete file backup of what was replaced, and restores to it
    safety = result["safety_backup"]
    assert safety.startswith(os.path.join(backup_dir, "safety") + os.sep)
    check = os.path.join(parent, "from-safety")
    ok(run_module("files_restore", {"source": safety, "backup_dir": backup_dir, "target": check}))
    assert snapshot(check) == modified
    # one audit line per restore
    with open(os.path.join(backup_dir, "restore_audit.jsonl"), encoding="utf-8") as handle:
        audit = [json.loads(line) for line in handle]
    assert [a["status"] for a in audit] == ["failure"] * 3 + ["success", "success"]
    assert audit[3]["source_type"] == "file_set" and audit[3]["name"] == "app" and audit[3]["target"] == app and audit[3]["previous"] == previous


def test_excludes_and_the_backup_directory_inside_the_set(app, tmp_path, run_module):
    for rel in ("cache/thumb1.jpg", "docs/cache/x", "docs/2025/draft.tmp", "tmp.tmp"):
        path = os.path.join(app, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"skip me")
    backup_dir = os.path.join(app, "var", "backups")  # inside the set: must not archive itself
    made = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir,
                                          "exclude": ["*.tmp", "cache"]}))["backup"]
    assert made["contents"]["exclude"] == ["*.tmp", "cache"]
    with subprocess.Popen(["zstd", "-dc", made["path"]], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            names = {os.path.normpath(m.name) for m in archive}
    assert not [n for n in names if "cache" in n.split("/") or n.endswith(".tmp") or n.startswith("var/backups")]
    assert {"docs/readme.txt", "docs/2025/report.pdf", "private/key.pem", "var"} <= names
    target = str(tmp_path / "restored")
    ok(run_module("files_restore", {"name": "app", "backup_dir": backup_dir, "target": target}))
    expected = {p for p in relpaths(app) if "cache" not in p.split("/") and not p.endswith(".tmp")
                and not p.startswith("var/backups")}
    assert relpaths(target) == expected


def test_file_modified_during_the_backup_is_reported(app, backup_dir, tmp_path, run_module):
    growing = os.path.join(app, "growing.log")
    with open(growing, "wb") as handle:
        handle.write(os.urandom(1024 * 1024) * 96)  # ~96 MiB: tar takes a while over it
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with open(growing, "ab") as out:
                out.write(b"line\n")
            time.sleep(0.002)

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir,
                                                "notification": {"metrics_dir": str(metrics)}, "compression_level": 1}))
        next_second()  # a second backup in the same second is refused (its name is taken)
        failing = run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir,
                                              "on_change": "fail", "compression_level": 1})
    finally:
        stop.set()
        thread.join()
    # warn (default): kept, and the file named everywhere a person or a program looks
    changed = result["changed_during_backup"]
    assert {"path": "./growing.log", "reason": "file changed as we read it"} in changed
    assert result["backup"]["contents"]["changed_during_backup"] == changed
    assert any("changed while they were read" in w and "./growing.log" in w for w in result["warnings"])
    assert any("WARNING" in line and "./growing.log" in line for line in result["log"])
    manifest = json.loads(open(result["backup"]["path"] + ".manifest.json", encoding="utf-8").read())
    assert manifest["contents"]["changed_during_backup"] == changed
    prom = (metrics / "doctorq_files_backup_app.prom").read_text()
    assert f'doctorq_files_backup_last_changed_files{{name="app",database="app"}} {len(changed)}' in prom
    assert 'doctorq_files_backup_last_run_status{name="app",database="app"} 1' in prom
    # fail: nothing kept, nothing left behind
    msg = failed(failing, "changed while they were read", "./growing.log", "nothing was kept")
    assert "on_change" in msg
    listed = ok(run_module("backup_info", {"backup_dir": backup_dir, "source_type": "file_set"}))["backups"]
    assert [b["id"] for b in listed] == [result["backup"]["id"]]
    assert not [n for n in os.listdir(backup_dir) if n.endswith(".partial")]


# --------------------------------------------------------------------------
# refusing what must not be restored


def flip_byte(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_archive_is_refused_and_the_target_untouched(app, backup_dir, run_module):
    made = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir}))["backup"]
    with open(os.path.join(app, "docs", "readme.txt"), "ab") as handle:
        handle.write(b"changed after the backup\n")
    current = snapshot(app)
    flip_byte(made["path"])
    result = run_module("files_restore", {"name": "app", "backup_dir": backup_dir, "confirm": app})
    failed(result, "checksum mismatch", "the target was not touched")
    assert result["checksums"]["verified"] is False
    assert snapshot(app) == current
    assert stray_dirs(os.path.dirname(app), "app") == []
    assert not os.path.exists(os.path.join(backup_dir, "safety"))  # the safety backup comes after verification
    info = ok(run_module("backup_info", {"backup_dir": backup_dir, "verify": True}))
    assert info["corrupt"] == [made["id"]] and info["backups"][0]["source_type"] == "file_set"


def forge_backup(backup_dir: str, members: list[tuple[tarfile.TarInfo, bytes | None]], name: str = "evil",
                 sample: list[dict[str, Any]] | None = None) -> str:
    """A complete-looking file backup (checksums and manifest right) around a hand-made archive."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    compressed = subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True, check=True).stdout
    started = utcnow()
    bid = backup_id(name, started, "files")
    file = f"{bid}.tar.zst"
    os.makedirs(backup_dir, exist_ok=True)
    path = os.path.join(backup_dir, file)
    with open(path, "wb") as handle:
        handle.write(compressed)
    hasher = Hasher()
    hasher.update(compressed)
    digest = hasher.digest()
    with open(path + ".sha256", "wb") as handle:
        handle.write(checksum_line(digest.sha256, file))
    manifest = Manifest(id=bid, name=name, kind="daily", started_at=iso(started), finished_at=iso(started),
                        duration_s=0.1, file=file, size=digest.size, sha256=digest.sha256, md5=digest.md5,
                        compression="zstd", compression_level=3, format="tar", source_type="file_set",
                        contents={"root": "/srv/evil", "paths": ["."], "count": len(members), "bytes": 0,
                                  "sample": sample or []})
    with open(path + ".manifest.json", "wb") as handle:
        handle.write(manifest.to_json())
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"pwned\n", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    info.linkname = link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("bad, reason", [
    ([entry("../escaped.txt")], "'..' in the path"),
    ([entry("ok/../../escaped.txt")], "'..' in the path"),
    ([entry("/tmp/doctorq-absolute-member.txt")], "absolute path"),
    ([entry("hl", tarfile.LNKTYPE, link="../escaped.txt")], "hard link"),
    ([entry("link", tarfile.SYMTYPE, link="/tmp"), entry("link/doctorq-through-symlink.txt")], "symlink 'link'"),
    ([entry("dev", tarfile.CHRTYPE)], "device file"),
], ids=["dotdot", "nested-dotdot", "absolute", "hardlink-out", "through-symlink", "device"])
def test_archive_escaping_the_target_is_refused_before_extracting(bad, reason, tmp_path, backup_dir, run_module):
    innocent = [entry("aaa-first.txt", data=b"harmless\n"), entry("dir/", tarfile.DIRTYPE)]
    path = forge_backup(backup_dir, innocent + bad)
    target = str(tmp_path / "restore" / "evil")
    outside = [str(tmp_path / "restore" / "escaped.txt"), "/tmp/doctorq-absolute-member.txt",
               "/tmp/doctorq-through-symlink.txt", str(tmp_path / "escaped.txt")]
    for check_mode in (True, False):
        result = run_module("files_restore", {"source": path, "backup_dir": backup_dir, "target": target},
                            check_mode=check_mode)
        failed(result, "would be written outside the target", reason, "nothing was extracted")
        assert result["checksums"]["verified"] is True  # the bytes are what the manifest says; the content is refused
    # nothing at all was extracted: not even the harmless first member, no staging directory, nothing outside
    assert not os.path.exists(target)
    assert not os.path.exists(os.path.dirname(target)) or os.listdir(os.path.dirname(target)) == []
    for path_ in outside:
        assert not os.path.lexists(path_), path_


# --------------------------------------------------------------------------
# failures midway leave the old directory as it was


def restore_over_live(tmp_path, run_module, path: str, backup_dir: str):
    """files_restore of ``path`` over a live directory: the directory, its snapshot from before, the result."""
    target = tmp_path / "live"
    target.mkdir()
    (target / "keep.txt").write_text("live data\n")
    before = snapshot(str(target))
    return target, before, run_module("files_restore", {"source": path, "backup_dir": backup_dir,
                                                        "target": str(target), "confirm": str(target)})


def test_extraction_failure_leaves_the_old_directory_intact(tmp_path, backup_dir, run_module):
    # a checksummed archive tar cannot extract whole: "x" is a file, then "x/y" needs it to be a directory
    path = forge_backup(backup_dir, [entry("a.txt", data=b"new\n"), entry("x", data=b"file\n"),
                                     entry("x/y", data=b"below a file\n")], name="broken")
    target, before, result = restore_over_live(tmp_path, run_module, path, backup_dir)
    failed(result, "tar failed while extracting")
    assert snapshot(str(target)) == before
    assert stray_dirs(str(tmp_path), "live") == []
    assert any("Removed the staging directory" in line for line in result["log"])


def test_content_differing_from_the_recorded_sample_is_refused(tmp_path, backup_dir, run_module):
    # checksums right (the archive is what was uploaded), content not what the backup hashed on disk
    good, bad = b"what was on disk\n", b"what the archive holds\n"
    sample = [{"path": "a.txt", "size": len(good), "sha256": hashlib.sha256(good).hexdigest()}]
    path = forge_backup(backup_dir, [entry("a.txt", data=bad)], name="tampered", sample=sample)
    target, before, result = restore_over_live(tmp_path, run_module, path, backup_dir)
    failed(result, "1 of the 1 files whose content the backup recorded differ", "a.txt", "The target was not touched")
    assert snapshot(str(target)) == before and stray_dirs(str(tmp_path), "live") == []
    # the same archive with the right sample restores
    sample[0].update(size=len(bad), sha256=hashlib.sha256(bad).hexdigest())
    path = forge_backup(backup_dir, [entry("a.txt", data=bad)], name="fine", sample=sample)
    assert ok(run_module("files_restore", {"source": path, "backup_dir": backup_dir,
                                           "target": str(tmp_path / "new")}))["sample_verified"] == 1
    assert (tmp_path / "new" / "a.txt").read_bytes() == bad


@pytest.mark.parametrize("atomic", [True, False], ids=["renameat2", "two-renames"])
def test_swap_failure_rolls_back_and_leaves_the_old_directory_intact(atomic, app, backup_dir, monkeypatch):
    ok(run_files_backup(files_job([app], backup_dir)))
    with open(os.path.join(app, "run.sh"), "wb") as handle:
        handle.write(b"#!/bin/sh\necho live\n")
    before = snapshot(app)
    real_rename = files_restore_job._rename  # pylint: disable=protected-access
    calls = []

    def failing_rename(src: str, dst: str) -> None:
        calls.append((src, dst))
        if len(calls) == 1 and (dst == app or ".pre_restore_" in dst):
            raise OSError(5, "Input/output error (injected)", dst)
        real_rename(src, dst)

    monkeypatch.setattr(files_restore_job, "_rename", failing_rename)
    if not atomic:
        monkeypatch.setattr(files_restore_job, "_exchange", lambda a, b: False)
    else:
        assert files_restore_job._exchange.__name__ == "_exchange"  # pylint: disable=protected-access
    job = FilesRestoreJob.from_params({"name": "app", "backup_dir": backup_dir, "confirm": app})
    result = run_files_restore(job)
    assert result["failed"] and "injected" in result["msg"]
    assert calls, "the swap was never attempted"
    assert snapshot(app) == before
    assert stray_dirs(os.path.dirname(app), "app") == []
    assert result["safety_backup"]  # taken before the swap, and kept


# --------------------------------------------------------------------------
# weekly copies and retention, as for databases


def test_weekly_copies_and_retention_on_disk_and_in_s3(app, backup_dir, run_module, s3_bucket):
    now = utcnow()
    base = {"name": "app", "paths": [app], "backup_dir": backup_dir, "s3": s3_bucket, "prune": False,
            "retention_daily_days": 30, "retention_weekly_days": 365, "retention_min_count": 1}
    ids = {}
    for label, days, weekly in (("A", 400, "always"), ("B", 200, "always"), ("C", 40, "never"), ("D", 10, "never")):
        ids[label] = ok(run_files_backup(FilesJob.from_params({**base, "weekly": weekly}), now=now - days * DAY))["backup"]["id"]
    weekly_b = os.path.join(backup_dir, "weekly", f"{ids['B']}.tar.zst")
    assert os.stat(weekly_b).st_nlink == 2  # a hard link of the daily: no extra space
    prefix = s3_bucket.get("prefix", "postgresql")
    b_day = (now - 200 * DAY).strftime("%Y-%m-%d")
    assert f"{prefix}/weekly/app/{b_day}/{ids['B']}.tar.zst.manifest.json" in s3_keys(s3_bucket)

    # a database backup set of the same name, old enough to be deleted were it counted with the files: untouched
    db_bid = backup_id("app", now - 500 * DAY)
    db_file = os.path.join(backup_dir, f"{db_bid}.dump.zst")
    with open(db_file, "wb") as handle:
        handle.write(b"dump")
    db_manifest = Manifest(id=db_bid, name="app", kind="daily", started_at=iso(now - 500 * DAY),
                           finished_at=iso(now - 500 * DAY), duration_s=1.0, file=os.path.basename(db_file), size=4,
                           sha256="0" * 64, md5="0" * 32, compression="zstd", compression_level=3)
    with open(db_file + ".manifest.json", "wb") as handle:
        handle.write(db_manifest.to_json())

    final = ok(run_module("files_backup", {**base, "prune": True, "weekly": "never"}))
    gone = {(d["id"], d["kind"], d["location"]) for d in final["deleted"]}
    expected = {(ids[x], "daily", where) for x in "ABC" for where in ("local", "s3")} | \
        {(ids["A"], "weekly", where) for where in ("local", "s3")}
    assert gone == expected
    listed = ok(run_module("backup_info", {"backup_dir": backup_dir, "s3": s3_bucket, "source_type": "file_set"}))["backups"]
    assert {(b["id"], b["kind"], b["location"]) for b in listed} == \
        {(i, k, where) for i, k in ((ids["D"], "daily"), (final["backup"]["id"], "daily"), (ids["B"], "weekly"))
         for where in ("local", "s3")}
    assert os.stat(weekly_b).st_nlink == 1  # the daily link went, the weekly bytes stay
    keys = s3_keys(s3_bucket)
    assert not [k for k in keys if ids["A"] in k or ids["C"] in k]
    assert os.path.exists(db_file) and os.path.exists(db_file + ".manifest.json")
    # backup_info lists both kinds side by side, each with its type
    both = ok(run_module("backup_info", {"backup_dir": backup_dir, "name": "app"}))["backups"]
    assert {b["source_type"] for b in both} == {"database", "file_set"}
    assert [b["id"] for b in both if b["source_type"] == "database"] == [db_bid]


def test_crash_leftovers_are_cleaned_per_type(app, backup_dir, run_module):
    os.makedirs(backup_dir)
    stamp = "20200101_020000"
    ours = [f".app_files_{stamp}.tar.zst.partial", f"app_files_{stamp}.tar.zst"]  # no manifest: incomplete
    theirs = [f".app_full_{stamp}.dump.zst.partial", "notes.txt"]  # a database's crash remains, a foreign file
    for name in ours + theirs:
        with open(os.path.join(backup_dir, name), "wb") as handle:
            handle.write(b"x")
    result = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir}))
    assert sorted(os.path.basename(p) for p in result["leftovers_removed"]) == sorted(ours)
    for name in theirs:
        assert os.path.exists(os.path.join(backup_dir, name)), name


# --------------------------------------------------------------------------
# the PostgreSQL configuration preset


def write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def test_postgresql_config_preset_round_trip(tmp_path, backup_dir, run_module):
    etc = tmp_path / "etc" / "postgresql"
    cluster = etc / "15" / "main"
    data = tmp_path / "data"
    ssl = tmp_path / "ssl"
    write(str(cluster / "postgresql.conf"),
          f"data_directory = '{data}'\t\t# use data in another directory\n"
          "hba_file = '" + str(cluster / "pg_hba.conf") + "'\n"
          "ssl = on\n"
          "include_dir = 'conf.d'\n"
          f"include_if_exists = '{tmp_path / 'nowhere.conf'}'\n")
    write(str(cluster / "conf.d" / "10-ssl.conf"),
          f"ssl_cert_file = '{ssl / 'server.crt'}'  # absolute\nssl_key_file = 'server.key'  # relative to data\n"
          f"ssl_ca_file = '{ssl / 'missing-ca.crt'}'\n")
    write(str(cluster / "conf.d" / "20-memory.conf"), "shared_buffers = 256MB\n")
    write(str(cluster / "pg_hba.conf"), "local all postgres peer\nhostssl all all 0.0.0.0/0 scram-sha-256\n", 0o640)
    write(str(cluster / "pg_ident.conf"), "# empty\n", 0o640)
    write(str(cluster / "start.conf"), "auto\n")
    write(str(ssl / "server.crt"), "-----BEGIN CERTIFICATE-----\n")
    write(str(data / "server.key"), "-----BEGIN PRIVATE KEY-----\n", 0o600)
    os.chown(data / "server.key", *OWNER)
    write(str(etc / "16" / "other" / "postgresql.conf"), "port = 5433\n")  # another cluster: not in this backup
    # ALTER SYSTEM's settings, read last: its ssl_crl_file wins and is backed up too
    write(str(data / "postgresql.auto.conf"), "# Do not edit this file manually!\nwork_mem = '64MB'\n"
          f"ssl_crl_file = '{ssl / 'root.crl'}'\n", 0o600)
    os.chown(data / "postgresql.auto.conf", *OWNER)
    write(str(ssl / "root.crl"), "-----BEGIN X509 CRL-----\n")

    result = ok(run_module("files_backup", {"preset": "postgresql_config", "pg_config_dir": str(etc),
                                            "backup_dir": backup_dir}))
    made = result["backup"]
    assert made["name"] == "postgresql_config" and made["contents"]["preset"] == "postgresql_config"
    assert made["contents"]["root"] == "/"
    assert made["contents"]["sources"] == [str(cluster), str(ssl / "server.crt"), str(data / "server.key"),
                                           str(ssl / "root.crl"), str(data / "postgresql.auto.conf")]
    assert any("missing-ca.crt" in w for w in result["warnings"])

    target = str(tmp_path / "restored")
    ok(run_module("files_restore", {"name": "postgresql_config", "backup_dir": backup_dir, "target": target}))
    inside = target + str(cluster)
    assert snapshot(inside) == snapshot(str(cluster))
    assert set(os.listdir(inside)) == {"postgresql.conf", "conf.d", "pg_hba.conf", "pg_ident.conf", "start.conf"}
    key = os.lstat(target + str(data / "server.key"))
    assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == (*OWNER, 0o600)
    assert open(target + str(ssl / "server.crt"), encoding="utf-8").read() == "-----BEGIN CERTIFICATE-----\n"
    auto = os.lstat(target + str(data / "postgresql.auto.conf"))
    assert (auto.st_uid, auto.st_gid, stat.S_IMODE(auto.st_mode)) == (*OWNER, 0o600)
    assert "work_mem = '64MB'" in open(target + str(data / "postgresql.auto.conf"), encoding="utf-8").read()
    assert not os.path.exists(target + str(etc / "16"))
    # a backup taken relative to / has no in-place default: the target must be named
    failed(run_module("files_restore", {"name": "postgresql_config", "backup_dir": backup_dir}), "set target")


# --------------------------------------------------------------------------
# check mode and options


def test_check_mode_writes_nothing(app, backup_dir, run_module, s3_bucket):
    plan = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir, "s3": s3_bucket},
                         check_mode=True))
    assert plan["plan"]["root"] == app and plan["plan"]["path"].startswith(os.path.join(backup_dir, "app_files_"))
    assert not os.path.exists(backup_dir) and s3_keys(s3_bucket) == []


@pytest.mark.parametrize("args, needle", [
    ({"name": "app", "paths": ["/nonexistent/doctorq"]}, "does not exist"),
    ({"name": "", "paths": ["/etc/hostname"]}, "not a usable file-set name"),  # any other name is fine (test_names)
    ({"name": "weekly", "paths": ["/etc/hostname"]}, "not a usable file-set name"),
    ({"name": "app", "paths": ["/etc/hostname"], "root": "/srv"}, "not under root"),
    ({"preset": "postgresql_config", "pg_config_dir": "/nonexistent/pg"}, "no PostgreSQL configuration"),
])
def test_bad_options_fail_before_writing(args, needle, backup_dir, run_module):
    failed(run_module("files_backup", {**args, "backup_dir": backup_dir}), needle)
    assert not os.path.exists(backup_dir)


def test_database_backup_is_not_restored_as_files(backup_dir, run_module, tmp_path):
    forged = forge_backup(backup_dir, [entry("a.txt")])
    raw = json.loads(open(forged + ".manifest.json", encoding="utf-8").read())
    raw["source_type"] = "database"  # what a pg_backup manifest looks like, its names too
    del raw["contents"]
    raw["id"] = raw["id"].replace("_files_", "_full_")
    raw["file"], raw["format"] = raw["id"] + ".dump.zst", "custom"
    path = os.path.join(backup_dir, raw["file"])
    os.rename(forged, path)
    with open(path + ".manifest.json", "w", encoding="utf-8") as handle:
        json.dump(raw, handle)
    failed(run_module("files_restore", {"source": path, "backup_dir": backup_dir, "target": str(tmp_path / "t")}),
           "is a database backup", "pg_restore_safe")
    assert not os.path.exists(tmp_path / "t")


def test_files_backup_is_not_restored_as_a_database(backup_dir, run_module):
    path = forge_backup(backup_dir, [entry("a.txt")])
    # refused from the manifest alone, before any connection to a server
    failed(run_module("pg_restore_safe", {"db": "doctorq_nowhere", "source": path, "backup_dir": backup_dir,
                                          "login_host": "127.0.0.1", "login_port": 1}),
           "is a file set backup, not a database backup", "files_restore")


# --------------------------------------------------------------------------
# archive tiers (moto)


def test_glacier_flow_on_moto(app, tmp_path, run_module, moto_bucket, moto_s3, moto_restores):
    made_on, restore_on = str(tmp_path / "backup-host"), str(tmp_path / "restore-host")
    before = snapshot(app)
    made = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": made_on,
                                          "s3": moto_bucket}))["backup"]
    glacier = GlacierObject(moto_s3.client(), moto_bucket["bucket"], made["s3_uri"].split("/", 3)[3], moto_restores)
    target = str(tmp_path / "restored" / "app")
    args = {"name": "app", "backup_dir": restore_on, "s3": moto_bucket, "target": target,
            "archive": {"tier": "Expedited"}}

    # check mode: reports the archived state, requests nothing, reads nothing
    plan = ok(run_module("files_restore", args, check_mode=True))
    assert plan["plan"]["archive_state"] == "pending" and plan["checksums"]["verified"] is False
    assert plan["source"]["location"] == "s3" and "contents" not in plan
    assert glacier.restore_header() is None

    # 1st run: the restore from the archive is requested; pending, changed, the target not created
    first = ok(run_module("files_restore", args))
    assert first["pending"] is True and first["changed"] is True
    assert first["archive"] == {made["file"]: {"storage_class": "GLACIER", "restore": "requested"}}
    assert "Run this restore again later" in first["msg"] and "Expedited" in first["msg"]
    assert "Nothing was changed in the target directory" in first["msg"]
    assert glacier.restore_header() is not None
    assert not os.path.exists(os.path.dirname(target))

    # the retrieval runs; a 2nd run waiting 2 s (polling every second): still pending, no second request
    glacier.start_retrieval()
    second = ok(run_module("files_restore", {**args, "archive": {"tier": "Expedited", "wait_timeout": 2, "poll_interval": 1}}))
    assert second["pending"] is True and second["changed"] is False
    assert second["archive"][made["file"]] == {"storage_class": "GLACIER", "restore": "in progress"}
    waits = sum("Waiting for the archive restore" in line for line in second["log"])
    assert waits >= 2 and not os.path.exists(os.path.dirname(target))

    # a 3rd run waits while the retrieval finishes, then restores the whole tree
    with glacier.finished_while_waiting(restore_on, waits):
        third = ok(run_module("files_restore", {**args, "archive": {"tier": "Expedited", "wait_timeout": 60, "poll_interval": 1}}))
    assert glacier.restore_header().startswith('ongoing-request="false"')
    assert not third.get("pending") and third["changed"] is True
    assert third["checksums"]["verified"] is True and third["sample_verified"] == 8
    assert snapshot(target) == before
    assert [a["status"] for a in read_audit(restore_on)] == ["pending", "pending", "success"]


def read_audit(backup_dir: str) -> list[dict[str, Any]]:
    with open(os.path.join(backup_dir, "restore_audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# --------------------------------------------------------------------------
# drills (restore_drill with file_set)


def drill_leftovers(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".drill_")] if os.path.isdir(directory) else []


def test_drill_restores_the_newest_from_s3_compares_and_cleans_up(app, backup_dir, tmp_path, run_module, s3_bucket):
    before = snapshot(app)
    ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir, "s3": s3_bucket}))
    with open(os.path.join(app, "docs", "readme.txt"), "ab") as handle:
        handle.write(b"edited after the first backup\n")
    next_second()  # a second backup in the same second is refused (its name is taken)
    newest = ok(run_module("files_backup", {"name": "app", "paths": [app], "backup_dir": backup_dir,
                                            "s3": s3_bucket}))["backup"]
    # a new host: its backup directory is empty, so the drill reads the bucket
    drill_host, reports, metrics = tmp_path / "drill-host", tmp_path / "reports", tmp_path / "metrics"
    metrics.mkdir()
    hook = Webhook()
    try:
        result = ok(run_module("restore_drill", {"file_set": "app", "backup_dir": str(drill_host), "s3": s3_bucket,
                                                 "report_dir": str(reports),
                                                 "notification": {"metrics_dir": str(metrics), "webhook_url": hook.url(),
                                                                  "webhook_format": "json"}}))
    finally:
        hook.close()
    report = result["report"]
    assert report["status"] == "success" and report["error"] is None and report["file_set"] == "app"
    assert report["backup_id"] == newest["id"] and report["backup_location"] == "s3"
    regular = [v for k, v in before.items() if v[0][0] == "file"]
    expected = {"files": len(regular), "symlinks": 3, "bytes": newest["contents"]["bytes"]}
    assert report["files"] == {"expected": expected, "found": expected, "sample": 8, "sample_differing": []}
    assert report["rto_s"] > 0 and 0 <= report["rpo_s"] < 600
    assert {"download", "inspect", "extract"} <= set(report["durations"])
    # the scratch directory was inside the drill host's backup directory, and is gone
    assert report["scratch_dir"].startswith(str(drill_host) + "/.drill_app_")
    assert not os.path.exists(report["scratch_dir"]) and drill_leftovers(str(drill_host)) == []
    assert os.listdir(drill_host / ".restore-work") == []
    saved = json.loads((reports / "drill_files_app.json").read_text())
    assert saved == {k: v for k, v in report.items() if k != "report_file"}
    prom = (metrics / "doctorq_files_drill_app.prom").read_text()
    assert 'doctorq_files_drill_last_run_status{name="app",database="app"} 1' in prom and "doctorq_files_drill_rto_seconds" in prom
    assert hook.received == []  # notification.notify_on defaults to failure
    assert snapshot(app) != before and os.path.exists(app)  # the live tree is never touched


def test_drill_fails_when_the_tree_differs_from_the_manifest(backup_dir, tmp_path, run_module):
    path = forge_backup(backup_dir, [entry("a.txt", data=b"one\n"), entry("b.txt", data=b"two\n")], name="forged")
    manifest = json.loads(open(path + ".manifest.json", encoding="utf-8").read())
    manifest["contents"].update(files=3, symlinks=0, bytes=8)  # the manifest promises a file the archive lacks
    with open(path + ".manifest.json", "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    hook = Webhook()
    try:
        result = run_module("restore_drill", {"file_set": "forged", "backup_dir": backup_dir,
                                              "report_dir": str(tmp_path / "reports"),
                                              "notification": {"metrics_dir": str(metrics), "webhook_url": hook.url(),
                                                               "webhook_format": "json"}})
    finally:
        hook.close()
    msg = failed(result, "restore drill of file set forged failed", "the restored tree has 2 files",
                 "the manifest says 3, 0, 8")
    report = result["report"]
    assert report["status"] == "failure" and report["error"] in msg
    assert report["files"]["found"] == {"files": 2, "symlinks": 0, "bytes": 8}
    assert not os.path.exists(report["scratch_dir"]) and drill_leftovers(backup_dir) == []
    assert 'doctorq_files_drill_last_run_status{name="forged",database="forged"} 0' in (metrics / "doctorq_files_drill_forged.prom").read_text()
    assert [body["event"] for _path, body in hook.received] == ["files_drill"]
    assert hook.received[0][1]["status"] == "failure" and hook.received[0][1]["file_set"] == "forged"

    # a damaged archive: the restore refuses it, the drill fails and still leaves nothing behind
    flip_byte(path)
    result = run_module("restore_drill", {"file_set": "forged", "backup_dir": backup_dir})
    failed(result, "checksum mismatch")
    assert not os.path.exists(result["report"]["scratch_dir"]) and drill_leftovers(backup_dir) == []


@pytest.mark.parametrize("args, needle", [
    ({"file_set": "app", "db": "app"}, "mutually exclusive"),
    ({}, "one of the following is required"),
    ({"file_set": "weekly"}, "not a usable file-set name"),
])
def test_drill_options(args, needle, run_module, backup_dir):
    failed(run_module("restore_drill", {"backup_dir": backup_dir, **args}), needle)
