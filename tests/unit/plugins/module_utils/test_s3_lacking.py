"""The metric s3_pending_uploads: complete local backups S3 lacks, counted from the local manifests alone."""

from __future__ import annotations

import datetime as dt

from ansible_collections.doctorq.backup.plugins.module_utils.backup_steps import Stores
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, backup_id, iso
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store

NOW = dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.timezone.utc)
KEEP = {"daily": 7, "weekly": 28}


def _set(store: LocalStore, days_ago: int, *, in_s3: bool, data: bool = True) -> str:
    started = NOW - dt.timedelta(days=days_ago)
    bid = backup_id("shop", started)
    manifest = Manifest(id=bid, name="shop", kind="daily", started_at=iso(started), finished_at=iso(started),
                        duration_s=1.0, file=f"{bid}.dump.zst", size=4, sha256="a" * 64, md5="b" * 32,
                        compression="zstd", compression_level=3,
                        s3={"uri": f"s3://b/pg/shop/{bid}.dump.zst", "key": f"pg/shop/{bid}.dump.zst"} if in_s3 else None)
    if data:
        with open(store.path("daily", manifest.file), "wb") as handle:
            handle.write(b"data")
    store.commit_manifest(manifest)
    return bid


def _stores(store: LocalStore, with_s3: bool = True) -> Stores:
    s3 = S3Store(S3Config(bucket="b", prefix="pg"), client=object()) if with_s3 else None
    return Stores(store, s3, "shop", "database")


def test_counts_complete_local_backups_without_an_s3_copy(tmp_path):
    store = LocalStore(str(tmp_path))
    store.ensure_writable()
    _set(store, 0, in_s3=False)      # tonight's, S3 down
    _set(store, 1, in_s3=False)      # last night's, S3 down too
    _set(store, 2, in_s3=True)
    _set(store, 3, in_s3=False, data=False)  # incomplete: never counted
    stores = _stores(store)
    assert stores.s3_lacking(NOW, KEEP) == {"s3_pending_uploads": 2.0}
    stores.s3 = None  # S3 failed during the run: still counted, from the local manifests
    assert stores.s3_lacking(NOW, KEEP) == {"s3_pending_uploads": 2.0}


def test_what_s3_retention_would_drop_is_not_pending(tmp_path):
    store = LocalStore(str(tmp_path))
    store.ensure_writable()
    _set(store, 0, in_s3=True)
    _set(store, 30, in_s3=False)     # older than the daily window: a catch-up would not upload it
    assert _stores(store).s3_lacking(NOW, KEEP) == {"s3_pending_uploads": 0.0}


def test_without_s3_there_is_no_metric(tmp_path):
    store = LocalStore(str(tmp_path))
    store.ensure_writable()
    _set(store, 0, in_s3=False)
    assert _stores(store, with_s3=False).s3_lacking(NOW, KEEP) == {}
