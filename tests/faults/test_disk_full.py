# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 7: a disk that fills up after the dump, while the checksum files or the manifest are written.

The dump fits; the disk is then filled (a filler file, while ``GatedBin``
holds pg_dump's output open) so that exactly 0, 1 or 2 pages are left once
the data file is written: the
``.md5``, the ``.sha256`` or the manifest is the first write that fails. With
S3 configured (SeaweedFS) the run must fail, and what it reports and what each
store lists must agree: nothing is listed, locally or in S3, no data file,
checksum file or ``.partial`` is left on the full disk, no object in S3, and
the next run (space freed) succeeds. With 3 pages left the daily set is
committed and the weekly copy's manifest is what does not fit: the run fails
saying the backup itself is complete, and no store lists a weekly copy.
"""
from __future__ import annotations

import glob
import os
import subprocess
import threading
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from backup_support import GatedBin, backup_files, next_second, s3_keys, s3_uploads, tmpfs, wait_for

pytestmark = pytest.mark.faults

PAGE = 4096


def job_params(pg_server, db: str, backup_dir, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": str(backup_dir), **extra}


def listing(run_module, backup_dir, s3: dict[str, Any], db: str) -> list[tuple[str, str]]:
    result = run_module("backup_info", {"backup_dir": str(backup_dir), "name": db, "s3": s3})
    assert not result.get("failed"), result.get("msg")
    return sorted((b["id"], b["location"]) for b in result["backups"])


def dump_pages(pg_server, db: str) -> int:
    """The pages the run's data file takes: pg_dump's output, as the run asks for it, is the same size every time."""
    done = subprocess.run([os.path.join(pg_server.bin_dir, "pg_dump"), "--format=custom", "--compress=0", "--no-password",
                           db], env={**os.environ, **pg_server.libpq_env(db)}, capture_output=True, check=True)
    return -(-len(done.stdout) // PAGE)


def fill_leaving(directory: str, pages: int) -> None:
    """Fill the file system of ``directory`` with a filler file until exactly ``pages`` free pages are left."""
    info = os.statvfs(directory)
    free = info.f_bavail * info.f_frsize
    assert info.f_frsize == PAGE and free >= pages * PAGE
    with open(os.path.join(directory, "filler"), "wb") as handle:
        handle.write(b"\0" * (free - pages * PAGE))
    info = os.statvfs(directory)
    assert info.f_bavail * info.f_frsize == pages * PAGE


def start_gated(pg_server, pg_db, tmp_path, backup_dir, s3: dict[str, Any], pages_left: int,
                **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A backup whose disk is filled once pg_dump is done, leaving ``pages_left`` pages after the data file."""
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir, hold=("pg_dump",))
    # no compressor: once pg_dump is done the data file's size is known (zstd would still hold its last frame)
    params = job_params(pg_server, pg_db, backup_dir, s3=s3, compression="none", log_dir=str(tmp_path / "logs"),
                        pg_bin_dir=gate.dir, **extra)
    os.makedirs(params["log_dir"])
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(run_backup(BackupJob.from_params(params))), daemon=True)
    worker.start()
    try:
        wait_for(lambda: gate.dumped("pg_dump"), timeout=30, what="pg_dump to finish")
        # the run reads its input in 1 MiB chunks: the data file is still empty, and will take dump_pages
        [partial] = glob.glob(os.path.join(backup_dir, ".*.dump.partial"))
        assert os.path.getsize(partial) == 0
        fill_leaving(backup_dir, dump_pages(pg_server, pg_db) + pages_left)
    finally:
        gate.release()
        worker.join(60)
    assert not worker.is_alive()
    params["pg_bin_dir"] = None
    return outcome, params


@pytest.mark.parametrize("pages_left, first_to_fail", [(0, ".md5"), (1, ".sha256"), (2, ".manifest.json")])
def test_disk_full_after_the_dump_lists_nothing_leaves_nothing_and_the_next_run_succeeds(
        pages_left, first_to_fail, pg_server, pg_db, run_module, tmp_path, s3_bucket, seaweed):
    s3c, bucket = seaweed.client(), s3_bucket["bucket"]
    with tmpfs(str(tmp_path / "small"), "8m") as backup_dir:
        outcome, params = start_gated(pg_server, pg_db, tmp_path, backup_dir, s3_bucket, pages_left, weekly="never")

        # the run failed, saying why
        assert outcome["failed"]
        assert "No space left on device" in outcome["msg"] and first_to_fail in outcome["msg"], outcome["msg"]
        assert "Nothing of this run's backup was kept, on disk or in S3." in outcome["msg"]
        # what it reports is what is listed: nothing, on disk or in S3
        assert listing(run_module, backup_dir, s3_bucket, pg_db) == []
        # nothing left behind on the full disk, nothing in S3
        assert backup_files(backup_dir) == ["filler"]
        assert s3_keys(s3c, bucket) == [] and s3_uploads(s3c, bucket) == []

        # space freed: the next run succeeds and lists exactly its own backup, in both stores
        os.unlink(os.path.join(backup_dir, "filler"))
        again = run_backup(BackupJob.from_params(params))
        assert not again.get("failed"), again.get("msg")
        assert listing(run_module, backup_dir, s3_bucket, pg_db) == [(again["backup"]["id"], "local"),
                                                                     (again["backup"]["id"], "s3")]
        name = again["backup"]["file"]
        assert backup_files(backup_dir) == sorted([name, name + ".md5", name + ".sha256", name + ".manifest.json"])


def test_disk_full_at_the_weekly_copy_lists_the_complete_daily_and_no_weekly(pg_server, pg_db, run_module, tmp_path,
                                                                             s3_bucket, seaweed):
    s3c, bucket = seaweed.client(), s3_bucket["bucket"]
    with tmpfs(str(tmp_path / "small"), "8m") as backup_dir:
        # data, .md5, .sha256 and the daily manifest fit; the weekly manifest does not
        outcome, params = start_gated(pg_server, pg_db, tmp_path, backup_dir, s3_bucket, 3, weekly="always")
        assert outcome["failed"]
        facts, msg = outcome["backup"], outcome["msg"]
        assert "No space left on device" in msg and "weekly" in msg
        assert f"The backup {facts['id']} itself is complete" in msg and facts["s3_uri"] in msg
        assert "promote-weekly" in msg and facts["weekly"] is False
        # listed: exactly the daily the result reports, in both stores; no weekly copy anywhere
        assert listing(run_module, backup_dir, s3_bucket, pg_db) == [(facts["id"], "local"), (facts["id"], "s3")]
        name = facts["file"]
        daily = sorted([name, name + ".md5", name + ".sha256", name + ".manifest.json"])
        assert backup_files(backup_dir) == sorted(daily + ["filler"])
        assert [k.rsplit("/", 1)[1] for k in s3_keys(s3c, bucket)] == daily
        assert not [k for k in s3_keys(s3c, bucket) if "/weekly/" in k]

        # space freed: the next run makes its backup and its weekly copy
        os.unlink(os.path.join(backup_dir, "filler"))
        next_second()
        again = run_backup(BackupJob.from_params(params))
        assert not again.get("failed"), again.get("msg")
        assert again["backup"]["weekly"] is True
        listed = listing(run_module, backup_dir, s3_bucket, pg_db)
        assert (again["backup"]["id"], "local") in listed and (again["backup"]["id"], "s3") in listed
        assert len(listed) == 6  # both dailies, and tonight's weekly copy, each in both stores
