"""File sets beside databases: naming, manifests, listing and retention never mix the two."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    InvalidManifest, Manifest, backup_id, belongs_to, checksum_line, iso,
)
from ansible_collections.doctorq.backup.plugins.module_utils.retention import to_delete
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2025, 12, 31, tzinfo=dt.timezone.utc)
FILESET = {"root": "/srv/app", "paths": ["."], "count": 3, "files": 2, "dirs": 1, "symlinks": 0, "bytes": 10,
           "changed_during_backup": []}


def database(name: str = "app", started: dt.datetime = STARTED, **over) -> Manifest:
    bid = backup_id(name, started)
    values = dict(id=bid, name=name, kind="daily", started_at=iso(started), finished_at=iso(started),
                  duration_s=1.0, file=f"{bid}.dump.zst", size=4, sha256="a" * 64, md5="b" * 32,
                  compression="zstd", compression_level=3)
    values.update(over)
    return Manifest(**values)


def fileset(name: str = "app", started: dt.datetime = STARTED, **over) -> Manifest:
    bid = backup_id(name, started, "files")
    values = dict(id=bid, name=name, kind="daily", started_at=iso(started), finished_at=iso(started),
                  duration_s=1.0, file=f"{bid}.tar.zst", size=4, sha256="c" * 64, md5="d" * 32,
                  compression="zstd", compression_level=3, format="tar", source_type="file_set", contents=dict(FILESET))
    values.update(over)
    return Manifest(**values)


@pytest.mark.parametrize("name, owner, source_type, expected", [
    ("app_files_20251107_143000.tar.zst", "app", "file_set", True),
    ("app_files_20251107_143000.tar.gz.sha256", "app", "file_set", True),
    ("app_files_20251107_143000.tar.manifest.json", "app", "file_set", True),
    (".app_files_20251107_143000.tar.zst.partial", "app", "file_set", True),
    # a database and a file set of the same name never claim each other's files
    ("app_files_20251107_143000.tar.zst", "app", "database", False),
    ("app_full_20251107_143000.dump.zst", "app", "file_set", False),
    ("app_globals_20251107_143000.sql.zst", "app", "file_set", False),
    # the extension has to fit the kind of file
    ("app_files_20251107_143000.dump.zst", "app", "file_set", False),
    ("app_full_20251107_143000.tar.zst", "app", "database", False),
    # the longest name wins, as for databases
    ("app_files_files_20251107_143000.tar.zst", "app_files", "file_set", True),
    ("app_files_full_20251107_143000.dump.zst", "app_files", "database", True),
])
def test_belongs_to_tells_file_sets_from_databases(name, owner, source_type, expected):
    assert belongs_to(name, owner, source_type) is expected


def test_backup_id_of_a_file_set():
    assert backup_id("uploads", STARTED, "files") == "uploads_files_20251107_143000"
    assert backup_id("uploads", STARTED) == "uploads_full_20251107_143000"


def test_manifests_say_what_they_were_taken_of_in_todays_words():
    db_json = json.loads(database().to_json())
    assert db_json["name"] == "app" and db_json["source_type"] == "database" and db_json["manifest_version"] == 3
    assert not {"database", "type", "fileset", "contents"} & set(db_json)
    files = fileset()
    raw = json.loads(files.to_json())
    assert raw["source_type"] == "file_set" and raw["contents"] == FILESET and raw["format"] == "tar"
    again = Manifest.from_json(files.to_json(), location="local", origin="/x")
    assert again == files
    summary = again.summary()
    assert summary["source_type"] == "file_set" and summary["contents"]["count"] == 3 and summary["name"] == "app"
    # the result's keys of before, until 1.0.0
    assert summary["type"] == "files" and summary["fileset"]["count"] == 3 and summary["database"] == "app"
    assert "contents" not in database().summary() and database().summary()["source_type"] == "database"


def test_version_1_manifests_of_databases_and_file_sets_read_in_todays_words():
    """What 0.1 wrote: ``database``, no ``type`` for a database, ``type: files`` and ``fileset`` for a file set."""
    db_raw = json.loads(database().to_json())
    db_raw["database"] = db_raw.pop("name")
    del db_raw["source_type"]
    db_raw["manifest_version"] = 1
    assert Manifest.from_json(json.dumps(db_raw).encode()) == dataclasses.replace(database(), manifest_version=1)
    fs_raw = json.loads(fileset().to_json())
    fs_raw.update(database=fs_raw.pop("name"), type="files", fileset=fs_raw.pop("contents"), manifest_version=1)
    del fs_raw["source_type"]
    again = Manifest.from_json(json.dumps(fs_raw).encode())
    assert again == dataclasses.replace(fileset(), manifest_version=1)
    assert json.loads(again.to_json())["manifest_version"] == 3  # written again (a weekly copy, a catch-up): today's


@pytest.mark.parametrize("field", ["source_type", "type"])
def test_a_manifest_of_an_unknown_source_type_is_kept_and_reported(field):
    raw = json.loads(fileset().to_json())
    if field == "type":  # a version-1 manifest
        raw.update(database=raw.pop("name"), type="snapshot", manifest_version=1)
        del raw["source_type"]
    else:
        raw["source_type"] = "snapshot"
    with pytest.raises(InvalidManifest, match="source_type 'snapshot' is none of database, file_set"):
        Manifest.load(json.dumps(raw).encode())


def test_retention_groups_file_sets_apart_from_the_database_of_the_same_name():
    old = dt.timedelta(days=100)
    db_old, db_new = database(started=NOW - old - dt.timedelta(days=1)), database(started=NOW - old)
    # a newer file set must not make the newest database backup deletable, nor the reverse
    only_file_set = fileset(started=NOW - dt.timedelta(days=1))
    doomed = to_delete([db_old, db_new, only_file_set], NOW, {"daily": 30, "weekly": 365})
    assert [m.id for m in doomed] == [db_old.id]
    fs_old = fileset(started=NOW - old)
    doomed = to_delete([db_new, only_file_set, fs_old], NOW, {"daily": 30, "weekly": 365})
    assert [m.id for m in doomed] == [fs_old.id]


def _write_set(store: LocalStore, manifest: Manifest) -> None:
    for name in manifest.files()[:-1]:
        with open(store.path("daily", name), "wb") as handle:
            handle.write(b"data" if name == manifest.file else checksum_line("0", manifest.file))
    store.commit_manifest(manifest)


def test_local_store_lists_and_cleans_per_type(tmp_path):
    store = LocalStore(str(tmp_path))
    store.ensure_writable()
    db, files = database(), fileset(started=STARTED + dt.timedelta(hours=1))
    _write_set(store, db)
    _write_set(store, files)
    assert [m.id for m in store.list("app")] == [db.id]  # the default stays "databases only"
    assert [m.id for m in store.list("app", "file_set")] == [files.id]
    assert [m.id for m in store.list(None, None)] == [files.id, db.id]
    # neither kind's crash cleanup touches the other's complete set
    assert store.leftovers("app") == [] and store.leftovers("app", "file_set") == []
    stray = tmp_path / f".{backup_id('app', STARTED + dt.timedelta(hours=2), 'files')}.tar.zst.partial"
    stray.write_bytes(b"half")
    assert store.leftovers("app") == []
    assert store.leftovers("app", "file_set") == [str(stray)]
    os.unlink(stray)


def test_a_set_a_newer_version_wrote_is_no_leftover_and_is_reported(tmp_path):
    """Going back a version must never make a backup job delete what the newer one wrote."""
    store = LocalStore(str(tmp_path))
    store.ensure_writable()
    newer = database()
    _write_set(store, newer)
    path = store.path("daily", newer.manifest_name)
    raw = json.loads(open(path, encoding="utf-8").read())
    raw["manifest_version"] = 4
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(raw, handle)
    assert store.list("app") == [] and store.leftovers("app") == []
    assert all(os.path.exists(store.path("daily", name)) for name in newer.files())
    (why,) = list(store.invalid.values())
    assert "manifest_version 4" in why and "upgrade" in why
