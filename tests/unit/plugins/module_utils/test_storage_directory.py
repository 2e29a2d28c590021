"""Directory backups in the local store: listed only when whole, removed whole, never outside backup_dir."""
from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, backup_id, iso
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, RefusedDelete, set_member

STARTED = dt.datetime(2025, 11, 7, 14, 30, tzinfo=dt.timezone.utc)
NAME = "doctorq_full_20251107_143000.dir"


def make_set(root, files: dict[str, bytes]) -> Manifest:
    """A directory backup on disk as pg_backup writes it, manifest last."""
    directory = root / NAME
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (root / f"{NAME}.sha256").write_text("x")
    (root / f"{NAME}.md5").write_text("y")
    manifest = Manifest(
        id=backup_id("doctorq", STARTED), name="doctorq", kind="daily", started_at=iso(STARTED),
        finished_at=iso(STARTED), duration_s=1.0, file=NAME, size=sum(len(d) for d in files.values()),
        sha256=hashlib.sha256(b"x").hexdigest(), md5=hashlib.md5(b"y").hexdigest(), compression="gzip",
        compression_level=6, format="directory", jobs=2,
        dir_files=[{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "md5": hashlib.md5(d).hexdigest()}
                   for n, d in sorted(files.items())])
    return LocalStore(str(root)).commit_manifest(manifest)


def test_listed_only_with_every_file_at_its_size(tmp_path):
    store = LocalStore(str(tmp_path))
    made = make_set(tmp_path, {"toc.dat": b"toc", "3001.dat.gz": b"data" * 10})
    assert [m.id for m in store.list("doctorq")] == [made.id] and store.leftovers("doctorq") == []
    (tmp_path / NAME / "3001.dat.gz").write_bytes(b"short")
    assert store.list("doctorq") == []
    (tmp_path / NAME / "3001.dat.gz").unlink()
    assert store.list("doctorq") == []


def test_weekly_links_every_file_and_delete_removes_the_directory(tmp_path):
    store = LocalStore(str(tmp_path))
    store.ensure_writable()
    made = make_set(tmp_path, {"toc.dat": b"toc", "3001.dat.gz": b"data"})
    weekly = store.add_weekly(made, None)
    assert os.path.samefile(tmp_path / NAME / "toc.dat", tmp_path / "weekly" / NAME / "toc.dat")
    assert sorted((m.kind, m.id) for m in store.list("doctorq")) == [("daily", made.id), ("weekly", made.id)]
    store.delete(weekly)
    assert not (tmp_path / "weekly" / NAME).exists() and (tmp_path / NAME / "toc.dat").exists()
    store.delete(made)
    assert sorted(os.listdir(tmp_path)) == ["weekly"]


def test_an_interrupted_directory_is_a_leftover_removed_whole(tmp_path):
    store = LocalStore(str(tmp_path))
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "toc.dat").write_bytes(b"toc")
    (tmp_path / "someone_else.dir").mkdir()
    left = store.leftovers("doctorq")
    assert left == [str(tmp_path / NAME)]
    store.remove(left)
    assert os.listdir(tmp_path) == ["someone_else.dir"]


def test_remove_refuses_what_is_not_one_level_below_backup_dir_in_a_dir_backup(tmp_path):
    store = LocalStore(str(tmp_path / "backups"))
    (tmp_path / "backups" / "other").mkdir(parents=True)
    (tmp_path / "backups" / "other" / "f").write_text("keep")
    with pytest.raises(RefusedDelete):
        store.remove([str(tmp_path / "backups" / "other" / "f")])
    with pytest.raises(RefusedDelete):
        store.remove([str(tmp_path / "backups" / f"{NAME}" / ".." / ".." / "x")])
    assert (tmp_path / "backups" / "other" / "f").exists()


@pytest.mark.parametrize("relative, expected", [
    (f"{NAME}/toc.dat", True), (NAME, True), (f"{NAME}.sha256", True), (f"{NAME}/a/b", False),
    ("other_full_20251107_143000.dir/toc.dat", False), ("toc.dat", False), (f"{NAME}/..", False),
])
def test_s3_keys_of_a_directory_backup_belong_to_it(relative, expected):
    assert set_member(relative, "doctorq", "database") is expected
