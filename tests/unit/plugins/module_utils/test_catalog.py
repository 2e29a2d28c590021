"""Naming and manifests: what marks a backup complete and ours."""
from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    InvalidManifest, Manifest, backup_id, belongs_to, checksum_line, iso,
)
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, RefusedDelete, S3Store
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)


def sample(**over) -> Manifest:
    values = dict(id=backup_id("doctorq", STARTED), name="doctorq", kind="daily", started_at=iso(STARTED),
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


def test_the_old_scripts_backups_are_never_ours():
    assert not belongs_to("doctorq_full_20251107_020000.sql.gz", "doctorq")
    assert not belongs_to("doctorq_full_20251107_020000.sql.gz.md5", "doctorq")
    assert not belongs_to("doctorq_globals_20251107_020000.dump.zst", "doctorq")


# --------------------------------------------------------------------------
# planted manifests (issue 11, case 1): validated before anything acts on them


GOOD_GLOBALS = {"file": "doctorq_globals_20251107_143000.sql.zst", "size": 1, "sha256": "c" * 64, "md5": "d" * 32}


@pytest.mark.parametrize("change, why", [
    ({"file": "../elsewhere/x"}, "file '../elsewhere/x' is not a plain file name"),
    ({"file": "/etc/passwd"}, "file '/etc/passwd' is not a plain file name"),
    ({"file": ".."}, "is not a plain file name"),
    ({"file": "doctorq_full_20251107_143000.dump.zst.md5"}, "is not doctorq_full_20251107_143000.dump[.zst|.gz]"),
    ({"file": "other_full_20251107_143000.dump.zst"}, "is not doctorq_full_20251107_143000.dump"),
    ({"globals": {**GOOD_GLOBALS, "file": "/var/lib/postgresql/x"}}, "globals.file '/var/lib/postgresql/x' is not a plain"),
    ({"globals": {**GOOD_GLOBALS, "file": "../../x"}}, "globals.file '../../x' is not a plain file name"),
    ({"globals": {**GOOD_GLOBALS, "file": "doctorq_globals_20200101_000000.sql.zst"}}, "globals.file"),
    ({"globals": {"file": "doctorq_globals_20251107_143000.sql.zst"}}, "globals lacks"),
    ({"id": "doctorq_full_20200101_000000"}, "its id"),
    ({"name": "other"}, "its id"),
    ({"started_at": "2020-01-01T00:00:00Z"}, "its id"),
    ({"size": "10"}, "its size is a str"),
    ({"size": True}, "its size is a bool"),
    ({"size": -1}, "size is negative"),
    ({"kind": "monthly"}, "kind 'monthly'"),
    ({"tables": {}}, "its tables is a dict"),
])
def test_a_manifest_that_does_not_hold_together_is_invalid(change, why):
    raw = json.loads(sample(globals=dict(GOOD_GLOBALS)).to_json())
    raw.update(change)
    with pytest.raises(InvalidManifest, match=re.escape(why)):
        Manifest.load(json.dumps(raw).encode())
    assert Manifest.from_json(json.dumps(raw).encode()) is None


def test_a_manifest_must_be_named_after_its_file():
    raw = sample().to_json()
    assert Manifest.load(raw, file_name="doctorq_full_20251107_143000.dump.zst.manifest.json") == sample()
    with pytest.raises(InvalidManifest, match="it is named 'doctorq_full_20251107_143001.dump.zst.manifest.json'"):
        Manifest.load(raw, file_name="doctorq_full_20251107_143001.dump.zst.manifest.json")


def test_what_is_not_ours_is_not_invalid_but_none():
    assert Manifest.load(b"{not json") is None
    assert Manifest.load(json.dumps({"tool": "pgbackrest", "file": "../x"}).encode()) is None


def test_deletes_never_leave_the_backup_directory_or_the_prefix(tmp_path):
    root = tmp_path / "backups"
    (root / "weekly").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")
    outside = tmp_path / "elsewhere" / "x"
    outside.write_text("precious")
    inside = root / "doctorq_full_20251107_143000.dump.zst"
    inside.write_text("ours")
    store = LocalStore(str(root))
    for path in (str(root / ".." / "elsewhere" / "x"), str(outside), str(root / "link" / "x")):
        with pytest.raises(RefusedDelete, match="refusing to delete"):
            store.remove([str(inside), path])
        assert outside.exists() and inside.exists()  # all refused, not one
    store.remove([str(inside), str(root / "weekly" / "gone")])
    assert not inside.exists()

    s3 = S3Store(S3Config(bucket="b", prefix="pg"), client=object())
    for key in ("other/doctorq/x", "pg/doctorq/../../other/x", "/pg/doctorq/x", "pg/doctorq//x", "pg/doctorqx/y"):
        with pytest.raises(RefusedDelete, match="refusing to delete"):
            s3.check_keys(["pg/doctorq/2025-11-07/ok", key], "doctorq")
    s3.check_keys(["pg/doctorq/2025-11-07/ok", "pg/weekly/doctorq/2025-11-07/ok"], "doctorq")
