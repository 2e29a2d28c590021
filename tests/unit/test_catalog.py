"""Naming and manifests: what marks a backup complete and ours."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    Manifest, backup_id, belongs_to, checksum_line, iso,
)
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, human
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.restore import conninfo_db, parse_when

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)


def sample(**over) -> Manifest:
    values = dict(id=backup_id("doctorq", STARTED), database="doctorq", kind="daily", started_at=iso(STARTED),
                  finished_at=iso(STARTED), duration_s=2.5, file="doctorq_full_20251107_143000.dump.zst", size=10,
                  sha256="a" * 64, md5="b" * 32, compression="zstd", compression_level=3)
    values.update(over)
    return Manifest(**values)


def test_backup_id_is_seed_like_and_utc():
    local = STARTED.astimezone(dt.timezone(dt.timedelta(hours=-3)))
    assert backup_id("doctorq", local) == "doctorq_full_20251107_143000"


@pytest.mark.parametrize("name, db, expected", [
    ("doctorq_full_20251107_143000.dump.zst", "doctorq", True),
    ("doctorq_full_20251107_143000.dump.zst.md5", "doctorq", True),
    ("doctorq_full_20251107_143000.dump.gz.manifest.json", "doctorq", True),
    (".doctorq_full_20251107_143000.dump.zst.partial", "doctorq", True),
    ("doctorq_globals_20251107_143000.sql.zst", "doctorq", True),
    ("app_full_full_20251107_143000.dump.zst", "app", False),  # belongs to database app_full
    ("app_full_full_20251107_143000.dump.zst", "app_full", True),
    ("doctorq_full_20251107_143000.sql.gz.bak", "doctorq", False),
    ("notes.txt", "doctorq", False),
])
def test_belongs_to_only_matches_our_names(name, db, expected):
    assert belongs_to(name, db) is expected


def test_manifest_round_trip_and_foreign_json_refused():
    manifest = sample(tables=[{"schema": "public", "name": "t", "rows": 3, "rows_estimate": 3, "bytes": 8192}])
    again = Manifest.from_json(manifest.to_json(), location="local", origin="/x")
    assert again == manifest and again.location == "local"
    assert json.loads(manifest.to_json())["tool"] == "doctorq.backup"
    foreign = json.loads(manifest.to_json())
    foreign["tool"] = "somebody-else"
    assert Manifest.from_json(json.dumps(foreign).encode()) is None
    assert Manifest.from_json(b"{not json") is None
    broken = json.loads(manifest.to_json())
    broken["started_at"] = "yesterday"
    assert Manifest.from_json(json.dumps(broken).encode()) is None


def test_files_end_with_the_manifest():
    manifest = sample(globals={"file": "doctorq_globals_20251107_143000.sql.zst", "size": 1, "sha256": "", "md5": ""})
    assert manifest.files()[-1] == manifest.file + ".manifest.json"
    assert manifest.files()[0] == manifest.file


def test_checksum_line_is_what_md5sum_writes():
    assert checksum_line("d41d8cd98f00b204e9800998ecf8427e", "x.dump.zst") == b"d41d8cd98f00b204e9800998ecf8427e  x.dump.zst\n"


def test_human_sizes():
    assert human(512) == "512B"
    assert human(1536) == "1.5K"
    assert human(1.2 * 1024 ** 3) == "1.2G"


@pytest.mark.parametrize("params, message", [
    ({}, "db is required"),
    ({"db": "x", "retention_daily_days": -1}, "retention_daily_days"),
    ({"db": "x", "compression": "gzip", "compression_level": 12}, "use 1 to 9"),
    ({"db": "x", "s3": {"bucket": "b", "encryption": "aws:kms"}}, "kms_key_id"),
    ({"db": "x", "s3": {"bucket": "b", "part_size_mb": 1}}, "part_size_mb"),
    ({"db": "x", "s3": {"bucket": "b", "access_key": "AK"}}, "go together"),
])
def test_bad_job_options_say_what_to_fix(params, message):
    base = {"backup_dir": "/tmp/x", "compression": "zstd"}
    with pytest.raises(ConfigError, match=message):
        BackupJob.from_params({**base, **params})


def test_parse_when_accepts_iso_and_defaults_to_utc():
    assert parse_when("2025-11-07T02:00:00Z") == dt.datetime(2025, 11, 7, 2, tzinfo=dt.timezone.utc)
    assert parse_when("2025-11-07 02:00:00") == dt.datetime(2025, 11, 7, 2, tzinfo=dt.timezone.utc)
    assert parse_when("2025-11-07T02:00:00-03:00") == dt.datetime(2025, 11, 7, 5, tzinfo=dt.timezone.utc)
    with pytest.raises(ConfigError, match="not a date"):
        parse_when("last tuesday")


def test_conninfo_db_cannot_smuggle_options():
    assert conninfo_db("x' host=evil") == "dbname='x\\' host=evil'"


def test_the_old_scripts_backups_are_never_ours():
    assert not belongs_to("doctorq_full_20251107_020000.sql.gz", "doctorq")
    assert not belongs_to("doctorq_full_20251107_020000.sql.gz.md5", "doctorq")
    assert not belongs_to("doctorq_globals_20251107_020000.dump.zst", "doctorq")
