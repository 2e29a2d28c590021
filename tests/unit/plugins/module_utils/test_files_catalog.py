"""File sets beside databases: naming, manifests, listing and retention never mix the two."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    Manifest, backup_id, belongs_to, checksum_line, iso,
)
from ansible_collections.doctorq.backup.plugins.module_utils.retention import to_delete
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2025, 12, 31, tzinfo=dt.timezone.utc)
FILESET = {"root": "/srv/app", "paths": ["."], "count": 3, "files": 2, "dirs": 1, "symlinks": 0, "bytes": 10,
           "changed_during_backup": []}


def database(name: str = "app", started: dt.datetime = STARTED, **over) -> Manifest:
    bid = backup_id(name, started)
    values = dict(id=bid, database=name, kind="daily", started_at=iso(started), finished_at=iso(started),
                  duration_s=1.0, file=f"{bid}.dump.zst", size=4, sha256="a" * 64, md5="b" * 32,
                  compression="zstd", compression_level=3)
    values.update(over)
    return Manifest(**values)


def fileset(name: str = "app", started: dt.datetime = STARTED, **over) -> Manifest:
    bid = backup_id(name, started, "files")
    values = dict(id=bid, database=name, kind="daily", started_at=iso(started), finished_at=iso(started),
                  duration_s=1.0, file=f"{bid}.tar.zst", size=4, sha256="c" * 64, md5="d" * 32,
                  compression="zstd", compression_level=3, format="tar", type="files", fileset=dict(FILESET))
    values.update(over)
    return Manifest(**values)


@pytest.mark.parametrize("name, owner, of_type, expected", [
    ("app_files_20251107_143000.tar.zst", "app", "files", True),
    ("app_files_20251107_143000.tar.gz.sha256", "app", "files", True),
    ("app_files_20251107_143000.tar.manifest.json", "app", "files", True),
    (".app_files_20251107_143000.tar.zst.partial", "app", "files", True),
    # a database and a file set of the same name never claim each other's files
    ("app_files_20251107_143000.tar.zst", "app", "database", False),
    ("app_full_20251107_143000.dump.zst", "app", "files", False),
    ("app_globals_20251107_143000.sql.zst", "app", "files", False),
    # the extension has to fit the kind of file
    ("app_files_20251107_143000.dump.zst", "app", "files", False),
    ("app_full_20251107_143000.tar.zst", "app", "database", False),
    # the longest name wins, as for databases
    ("app_files_files_20251107_143000.tar.zst", "app_files", "files", True),
    ("app_files_full_20251107_143000.dump.zst", "app_files", "database", True),
])
def test_belongs_to_tells_file_sets_from_databases(name, owner, of_type, expected):
    assert belongs_to(name, owner, of_type) is expected


def test_backup_id_of_a_file_set():
    assert backup_id("uploads", STARTED, "files") == "uploads_files_20251107_143000"
    assert backup_id("uploads", STARTED) == "uploads_full_20251107_143000"


def test_database_manifest_json_is_unchanged_and_file_manifest_carries_its_type():
    db_json = json.loads(database().to_json())
    assert "type" not in db_json and "fileset" not in db_json  # byte-for-byte what 0.1 wrote
    assert Manifest.from_json(database().to_json()).type == "database"
    files = fileset()
    raw = json.loads(files.to_json())
    assert raw["type"] == "files" and raw["fileset"] == FILESET and raw["format"] == "tar"
    again = Manifest.from_json(files.to_json(), location="local", origin="/x")
    assert again == files
    summary = again.summary()
    assert summary["type"] == "files" and summary["fileset"]["count"] == 3
    assert "fileset" not in database().summary() and database().summary()["type"] == "database"


def test_manifest_of_an_unknown_type_is_not_ours_to_handle():
    raw = json.loads(fileset().to_json())
    raw["type"] = "snapshot"
    assert Manifest.from_json(json.dumps(raw).encode()) is None


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
    assert [m.id for m in store.list("app", "files")] == [files.id]
    assert [m.id for m in store.list(None, None)] == [files.id, db.id]
    # neither kind's crash cleanup touches the other's complete set
    assert store.leftovers("app") == [] and store.leftovers("app", "files") == []
    stray = tmp_path / f".{backup_id('app', STARTED + dt.timedelta(hours=2), 'files')}.tar.zst.partial"
    stray.write_bytes(b"half")
    assert store.leftovers("app") == []
    assert store.leftovers("app", "files") == [str(stray)]
    os.unlink(stray)
