"""restore_directory without servers: pg_restore's default jobs, the names to check, and every file hashed in place."""
from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import restore_directory
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, backup_id, iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import IntegrityError
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import DATABASE, Source, Sources

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)
NAME = "doctorq_full_20251107_143000.dir"
CONTENT = {"toc.dat": b"toc" * 100, "3456.dat.gz": os.urandom(3 << 20), "3457.dat.gz": b""}


def entry(name: str, data: bytes) -> dict:
    return {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "md5": hashlib.md5(data).hexdigest()}  # nosec - as md5sum


def manifest(origin: str = "", **over) -> Manifest:
    files = sorted((entry(n, d) for n, d in CONTENT.items()), key=lambda e: e["name"])
    values = dict(id=backup_id("doctorq", STARTED), name="doctorq", kind="daily", started_at=iso(STARTED),
                  finished_at=iso(STARTED), duration_s=2.5, file=NAME, size=sum(f["size"] for f in files),
                  sha256="e" * 64, md5="f" * 32, compression="gzip", compression_level=6, format="directory",
                  jobs=4, dir_files=files, location="local", origin=origin)
    values.update(over)
    return Manifest(**values)


@pytest.mark.parametrize("requested, fmt, jobs, cores, expected", [
    (None, "custom", 0, 8, 1),  # one file: one job by default, as always
    (None, "directory", 4, 8, 4),  # a directory: the backup's own jobs
    (None, "directory", 4, 2, 2),  # ... at most one per core
    (3, "directory", 4, 8, 3),  # asked: as asked
    (0, "custom", 0, 6, 6),  # 0: one per core
])
def test_restore_jobs(monkeypatch, requested, fmt, jobs, cores, expected) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert restore_directory.restore_jobs(requested, manifest(format=fmt, jobs=jobs)) == expected


def test_data_names() -> None:
    assert restore_directory.data_names(manifest()) == [f"{NAME}/{n}" for n in sorted(CONTENT)]
    single = manifest(format="custom", file="doctorq_full_20251107_143000.dump.zst", dir_files=None)
    assert restore_directory.data_names(single) == ["doctorq_full_20251107_143000.dump.zst"]


def on_disk(tmp_path) -> tuple[Sources, Source]:
    backup_dir = tmp_path / "backups"
    (backup_dir / NAME).mkdir(parents=True)
    for name, data in CONTENT.items():
        (backup_dir / NAME / name).write_bytes(data)
    sources = Sources(DATABASE, str(backup_dir), None)
    return sources, Source(manifest(origin=str(backup_dir / (NAME + ".manifest.json"))), sources.local)


def test_on_disk_every_file_is_hashed_in_place(tmp_path) -> None:
    sources, source = on_disk(tmp_path)
    lines: list[str] = []
    path = restore_directory.fetch_data(sources, source, lines.append, keep=True)
    assert path == str(tmp_path / "backups" / NAME)  # read in place: no copy
    assert not os.path.exists(tmp_path / "backups" / ".restore-work")
    assert "verify" in sources.durations and "download" not in sources.durations
    assert any("every file of" in line and "3 files" in line for line in lines)


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\0"), "does not match the manifest"),
    (lambda p: p.unlink(), "is missing"),
])
def test_on_disk_a_damaged_or_missing_file_is_named(tmp_path, damage, needle) -> None:
    sources, source = on_disk(tmp_path)
    damage(tmp_path / "backups" / NAME / "3456.dat.gz")
    with pytest.raises(IntegrityError) as raised:
        restore_directory.fetch_data(sources, source, lambda _line: None, keep=True)
    assert f"file 3456.dat.gz of directory backup {source.manifest.id}" in str(raised.value)
    assert needle in str(raised.value) and "the target database was not touched" in str(raised.value)


def test_discard_removes_a_file_or_a_directory(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    (tmp_path / "f").write_bytes(b"x")
    for name in ("d", "f", "absent"):
        restore_directory.discard(str(tmp_path / name))
    restore_directory.discard(None)
    assert os.listdir(tmp_path) == []
