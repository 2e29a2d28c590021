# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Listing and re-verifying complete backups (``backup_info``, ``doctorq-backup list``)."""

from __future__ import annotations

from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, newest_first
from ansible_collections.doctorq.backup.plugins.module_utils.errors import StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import copy_hashed
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store, invalid_notes


def stores(backup_dir: str | None, s3cfg: s3util.S3Config | None) -> list[LocalStore | S3Store]:
    found: list[LocalStore | S3Store] = []
    if backup_dir:
        found.append(LocalStore(backup_dir))
    if s3cfg:
        found.append(S3Store(s3cfg))
    return found


def store_for(manifest: Manifest, candidates: list[LocalStore | S3Store]) -> LocalStore | S3Store:
    return next(s for s in candidates if s.location == manifest.location)


def list_backups(candidates: list[LocalStore | S3Store], db: str | None = None,
                 source_type: str | None = "database") -> list[Manifest]:
    """Complete backups in every store, newest first (``source_type`` None: databases and file sets)."""
    found: list[Manifest] = []
    for store in candidates:
        found.extend(store.list(db, source_type))
    return newest_first(found)


def list_reachable(candidates: list[LocalStore | S3Store], db: str | None = None,
                   source_type: str | None = "database") -> tuple[list[Manifest], str | None]:
    """Like ``list_backups``, but S3 failing to answer is reported (second value), not raised.

    S3 down is the disaster case: the local copies are then exactly what a
    listing, a restore or a drill needs. Only with a local store to fall back
    on; with S3 alone there is nothing to list, and its error is raised.
    """
    found: list[Manifest] = []
    problem = None
    fallback = any(not s.remote for s in candidates)
    for store in candidates:
        try:
            found.extend(store.list(db, source_type))
        except StorageError as exc:
            if not fallback or not store.remote:
                raise
            problem = problem or str(exc)
    return newest_first(found), problem


def ignored(candidates: list[LocalStore | S3Store]) -> list[str]:
    """The warnings about manifests the listings ignored as invalid: reported, never listed, followed or deleted."""
    return [warning for store in candidates for _where, warning in invalid_notes(store)]


def s3_unavailable(problem: str, backup_dir: str) -> str:
    """The warning when S3 could not be listed and the local backups stand in for it."""
    return (f"S3 is unavailable, so only the local backups in {backup_dir} are used (S3 may hold newer ones): "
            f"{problem}")


def verify(manifest: Manifest, store: LocalStore | S3Store) -> dict[str, Any]:
    """Re-read the backup (and its globals file) and compare with the manifest."""
    if manifest.location == "s3" and (manifest.s3 or {}).get("storage_class") in s3util.ARCHIVE_CLASSES:
        return {"ok": None, "state": "archived",
                "message": f"{manifest.id} is in {manifest.s3['storage_class']}: restore it from the archive tier to verify it."}
    if manifest.is_directory:  # every file, and the checksum files (the manifest holds their own hashes)
        checks = [(f"{manifest.file}/{f['name']}", f["size"], f["sha256"], f["md5"]) for f in manifest.dir_files or []]
        checks += [(manifest.file + ".sha256", None, manifest.sha256, None),
                   (manifest.file + ".md5", None, None, manifest.md5)]
    else:
        checks = [(manifest.file, manifest.size, manifest.sha256, manifest.md5)]
    if manifest.globals:
        g = manifest.globals
        checks.append((g["file"], g["size"], g["sha256"], g["md5"]))
    problems = []
    for name, size, sha256, md5 in checks:
        try:
            reader = store.open(manifest, name)
            try:
                digest = copy_hashed(reader)
            finally:
                reader.close()
        except (OSError, StorageError) as exc:
            problems.append(f"{name}: cannot be read ({exc})")
            continue
        found = tuple(seen if want is not None else None for seen, want in zip((digest.size, digest.sha256, digest.md5),
                                                                               (size, sha256, md5)))
        if found != (size, sha256, md5):
            problems.append(f"{name}: size/sha256/md5 {'/'.join(str(v) for v in found)} "
                            f"differ from the manifest's {size}/{sha256}/{md5}")
    if problems:
        return {"ok": False, "state": "corrupt", "message": "; ".join(problems)}
    return {"ok": True, "state": "verified", "message": "checksums match the manifest"}
