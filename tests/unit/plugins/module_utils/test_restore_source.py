"""One source engine for database and file restores (restore_source.py): finding, wording, archive options, verified reads."""
from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, backup_id, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.files_restore_job import files_restore_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.restore import restore_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import (
    DATABASE, FILES, ArchiveOptions, Sources, archive_argument_spec, parse_when,
)


def backup_set(directory: str, name: str, source_type: str, data: bytes = b"payload\n") -> str:
    """A complete local backup set of ``source_type``: data file and manifest (what the finder reads)."""
    started = utcnow()
    what, ext = ("files", ".tar.zst") if source_type == "file_set" else ("full", ".dump.zst")
    bid = backup_id(name, started, what)
    path = os.path.join(directory, bid + ext)
    with open(path, "wb") as handle:
        handle.write(data)
    manifest = Manifest(id=bid, name=name, kind="daily", started_at=iso(started), finished_at=iso(started),
                        duration_s=0.1, file=os.path.basename(path), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest(),  # nosec
                        compression="zstd", compression_level=3, source_type=source_type,
                        format="tar" if source_type == "file_set" else "custom",
                        contents={"count": 1} if source_type == "file_set" else None)
    with open(path + ".manifest.json", "wb") as handle:
        handle.write(manifest.to_json())
    return path


def test_each_restore_finds_its_own_type_and_names_the_module_for_the_other(tmp_path):
    files_path = backup_set(str(tmp_path), "app", "file_set")
    db_path = backup_set(str(tmp_path), "app", "database")
    log = RunLog()
    for wording, own, other, module in ((DATABASE, db_path, files_path, "files_restore"),
                                        (FILES, files_path, db_path, "pg_restore_safe")):
        sources = Sources(wording, str(tmp_path), None)
        assert sources.find(own, None, None, log).manifest.source_type == wording.source_type
        assert sources.find(own + ".manifest.json", None, None, log).ref == own
        with pytest.raises(ConfigError, match=f"not {wording.noun}: restore it with {module}"):
            sources.find(other, None, None, log)
        # latest of "app": only its own type counts
        assert sources.find("latest", "app", None, log).ref == own
    assert any("Newest complete backup of file set 'app'" in line for line in log.lines)
    assert any("Newest complete backup of database 'app'" in line for line in log.lines)


def test_messages_use_the_words_of_their_type(tmp_path):
    log = RunLog()
    with pytest.raises(StorageError, match=r"no complete backup of file set 'app' in .*check name/backup_dir/s3, "
                                           r"or list backups with backup_info source_type=file_set\."):
        Sources(FILES, str(tmp_path), None).find("latest", "app", None, log)
    with pytest.raises(StorageError, match="no complete backup of database 'db'.*check source_db/backup_dir/s3"):
        Sources(DATABASE, str(tmp_path), None).find("latest", "db", None, log)
    with pytest.raises(StorageError, match="has no manifest .*refusing to restore it"):
        Sources(FILES, str(tmp_path), None).find(str(tmp_path / "nothing.tar.zst"), None, None, log)
    with pytest.raises(ConfigError, match=r"the key in source 's3://bucket-only' is empty: .*\(s3://BUCKET/KEY\)"):
        Sources(FILES, str(tmp_path), None).find("s3://bucket-only", None, None, log)


@pytest.mark.parametrize("wording, untouched", [(DATABASE, "the target database was not touched"),
                                                (FILES, "the target was not touched")])
def test_fetch_verified_reads_local_bytes_once_and_refuses_a_mismatch(wording, untouched, tmp_path):
    path = backup_set(str(tmp_path), "app", wording.source_type)
    durations: dict[str, float] = {}
    sources = Sources(wording, str(tmp_path), None, durations=durations)
    source = sources.find(path, None, None, RunLog())
    assert sources.archive_state(source, [source.manifest.file], request=True) == "available"
    assert sources.fetch_verified(source, source.manifest.file, RunLog(), keep=True) == path
    assert "verify" in durations and not os.path.exists(tmp_path / ".restore-work")
    with open(path, "r+b") as handle:
        handle.write(b"X")
    with pytest.raises(IntegrityError, match=f"checksum mismatch .*{untouched}"):
        sources.fetch_verified(source, source.manifest.file, RunLog(), keep=True)
    with pytest.raises(StorageError, match="is not a file of backup"):
        sources.fetch_verified(source, "other.sql.zst", RunLog(), keep=False)


def test_archive_options_are_one_spec_for_both_restores():
    shared = archive_argument_spec()
    for spec in (restore_argument_spec(), files_restore_argument_spec()):
        assert {k: spec[k] for k in shared} == shared
    assert ArchiveOptions.from_params({"archive": {"tier": "Bulk", "days": 3, "wait_timeout": 60,
                                                   "poll_interval": 5}}) == ArchiveOptions("Bulk", 3, 60, 5)
    assert ArchiveOptions.from_params({}) == ArchiveOptions() == ArchiveOptions.from_params({"archive": None})
    with pytest.raises(ConfigError, match="archive.wait_timeout must not be negative"):
        ArchiveOptions.from_params({"archive": {"wait_timeout": -1}})
    with pytest.raises(ConfigError, match="archive.poll_interval must be at least 1"):
        ArchiveOptions.from_params({"archive": {"poll_interval": -5}})


def test_parse_when_accepts_iso_and_defaults_to_utc():
    assert parse_when("2025-11-07T02:00:00Z") == dt.datetime(2025, 11, 7, 2, tzinfo=dt.timezone.utc)
    assert parse_when("2025-11-07 02:00:00") == dt.datetime(2025, 11, 7, 2, tzinfo=dt.timezone.utc)
    assert parse_when("2025-11-07T02:00:00-03:00") == dt.datetime(2025, 11, 7, 5, tzinfo=dt.timezone.utc)
    with pytest.raises(ConfigError, match="not a date"):
        parse_when("last tuesday")
