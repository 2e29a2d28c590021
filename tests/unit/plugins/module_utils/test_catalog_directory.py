"""Directory backups (pg_dump -Fd) in the catalog: names, the manifest's format, and what old manifests keep."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    MANIFEST_VERSION, InvalidManifest, Manifest, backup_id, belongs_to, iso,
)

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)
FILES = [{"name": "toc.dat", "size": 100, "sha256": "a" * 64, "md5": "b" * 32},
         {"name": "3456.dat.gz", "size": 900, "sha256": "c" * 64, "md5": "d" * 32}]


def directory(**over) -> Manifest:
    values = dict(id=backup_id("doctorq", STARTED), name="doctorq", kind="daily", started_at=iso(STARTED),
                  finished_at=iso(STARTED), duration_s=2.5, file="doctorq_full_20251107_143000.dir", size=1000,
                  sha256="e" * 64, md5="f" * 32, compression="gzip", compression_level=6, format="directory",
                  jobs=2, dir_files=[dict(f) for f in FILES])
    values.update(over)
    return Manifest(**values)


@pytest.mark.parametrize("name, expected", [
    ("doctorq_full_20251107_143000.dir", True),
    ("doctorq_full_20251107_143000.dir.sha256", True),
    ("doctorq_full_20251107_143000.dir.md5", True),
    ("doctorq_full_20251107_143000.dir.manifest.json", True),
    (".doctorq_full_20251107_143000.dir.manifest.json.partial", True),
    ("doctorq_full_20251107_143000.dir.gz", False),
    ("doctorq_globals_20251107_143000.dir", False),
    ("doctorq_files_20251107_143000.dir", False),
])
def test_directory_names_belong_to_the_database(name, expected):
    assert belongs_to(name, "doctorq") is expected


def test_directory_manifest_round_trip_lists_every_file():
    manifest = directory()
    data = json.loads(manifest.to_json())
    assert data["format"] == "directory" and data["jobs"] == 2 and data["files"] == FILES
    assert data["manifest_version"] == MANIFEST_VERSION == 3 and "dir_files" not in data
    again = Manifest.load(manifest.to_json(), file_name=manifest.manifest_name)
    assert again.dir_files == FILES and again.jobs == 2 and again.is_directory
    assert again.files() == ["doctorq_full_20251107_143000.dir/toc.dat", "doctorq_full_20251107_143000.dir/3456.dat.gz",
                             "doctorq_full_20251107_143000.dir.md5", "doctorq_full_20251107_143000.dir.sha256",
                             "doctorq_full_20251107_143000.dir.manifest.json"]
    assert again.summary()["file_count"] == 2


def test_single_file_manifests_have_no_directory_fields():
    single = directory(file="doctorq_full_20251107_143000.dump.zst", format="custom", jobs=0, dir_files=None,
                       compression="zstd", compression_level=3)
    data = json.loads(single.to_json())
    assert "files" not in data and "jobs" not in data and data["manifest_version"] == MANIFEST_VERSION
    assert data["format"] == "custom"
    assert Manifest.load(single.to_json()).files()[0] == single.file


@pytest.mark.parametrize("change, why", [
    (lambda d: d.update(files=[]), "without a list of files"),
    (lambda d: d.pop("jobs"), "without jobs"),
    (lambda d: d["files"][0].update(name="../../etc/passwd"), "not a plain file name"),
    (lambda d: d["files"][1].update(name="toc.dat"), "no repeat"),
    (lambda d: d["files"][0].update(size="100"), "lacks a name, size"),
    (lambda d: d.update(size=5), "not the total"),
    (lambda d: d.update(file="doctorq_full_20251107_143000.dump.zst"), "is not doctorq_full_20251107_143000.dir"),
])
def test_a_directory_manifest_that_does_not_hold_together_is_refused(change, why):
    data = json.loads(directory().to_json())
    change(data)
    with pytest.raises(InvalidManifest, match=why.replace("(", r"\(")):
        Manifest.load(json.dumps(data).encode())


def test_a_newer_manifest_version_is_kept_and_reported_never_taken_for_a_leftover():
    data = json.loads(directory().to_json())
    data["manifest_version"] = MANIFEST_VERSION + 1
    with pytest.raises(InvalidManifest, match="manifest_version 4 is not one this version reads .*upgrade") as caught:
        Manifest.load(json.dumps(data).encode())
    assert caught.value.name == "doctorq"  # so the job it concerns reports it (and keeps its files)


def test_a_version_2_directory_manifest_reads_in_todays_words():
    data = json.loads(directory().to_json())
    data["database"] = data.pop("name")
    del data["source_type"]
    data["manifest_version"] = 2
    again = Manifest.load(json.dumps(data).encode())
    assert (again.name, again.source_type, again.is_directory, again.dir_files) == ("doctorq", "database", True, FILES)
