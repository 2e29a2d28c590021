# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where backup sets live: a local directory and an S3 prefix, one small interface.

A backup set is a data file, its ``.md5`` and ``.sha256`` files, an optional
globals file, and the manifest, written last. A directory backup's data is
the directory ``<id>.dir/`` (pg_dump -Fd; every file in the manifest), one
object per file in S3 under ``<id>.dir/``. Deletion goes the other way
round (manifest first), so an interrupted deletion leaves an incomplete set,
never one that looks complete.

Both stores answer the same calls, so callers treat them alike: a file of a
store is a *ref* (a path on disk, a key in S3) that ``describe`` turns into
what messages show; ``list``, ``open``, ``read_manifest``, ``put``, ``delete``,
``remove``, ``leftovers``, ``commit_manifest``. What only S3 has is asked
through calls the local store answers trivially: ``remote`` (read through a
download, and off-site: its failure falls back to the local copies),
``local_path`` (None: download it), ``archived``/``request_restore`` (archive
tiers), ``unfinished_uploads``/``abort_uploads`` (multipart uploads).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import posixpath
import shutil
from typing import IO, Any, Iterator
from urllib.parse import urlencode

from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    DIR_EXT, MANIFEST_SUFFIX, InvalidManifest, Manifest, belongs_to, encode_name, name_forms, newest_first,
)
from ansible_collections.doctorq.backup.plugins.module_utils.errors import StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.procs import stop_writers
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import makedirs_owned
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import (
    fsync_dir, remove_quietly, write_file_atomic,
)

KIND_TAG = "doctorq-backup-kind"
PART_TAG = "doctorq-backup-part"


class RefusedDelete(StorageError):
    """A delete refused because a name leads out of the store: a warning, never an S3 outage."""


def parse_manifest(raw: bytes, name: str, location: str, origin: str, db: str | None, source_type: str | None,
                   invalid: dict[str, str]) -> Manifest | None:
    """The manifest in ``raw``, or None; one that is ours but invalid is noted in ``invalid`` (origin -> why).

    Noted only when it is about ``db`` (by the database it claims or by its
    own name), so each job reports the manifests it ignores among its own.
    """
    try:
        return Manifest.load(raw, location=location, origin=origin, file_name=name)
    except InvalidManifest as exc:
        if db is None or exc.name == db or belongs_to(name, db, source_type or "database"):
            invalid[origin] = str(exc)
        return None


def beside_invalid(path: str, invalid: dict[str, str]) -> bool:
    """Whether ``path`` is an invalid manifest or a file of the set it names by its own name (never deleted)."""
    return any(path == origin or path == origin[:-len(MANIFEST_SUFFIX)] or path.startswith(origin[:-len(MANIFEST_SUFFIX)] + ".")
               for origin in invalid)


def set_member(relative: str, db: str, source_type: str) -> bool:
    """Whether ``relative`` (a name in a store's folder, or ``<id>.dir/<file>``) is a file this tool writes for ``db``."""
    head, tail = (relative.split("/", 1) + [""])[:2]
    if not tail:
        return belongs_to(head, db, source_type)
    return head.endswith("." + DIR_EXT) and "/" not in tail and tail not in (".", "..") and belongs_to(head, db, source_type)


def data_sizes(manifest: Manifest) -> dict[str, int]:
    """The data files of a set as the store holds them (``<id>.dir/<file>`` for a directory) -> their sizes."""
    if manifest.is_directory:
        return {f"{manifest.file}/{f['name']}": f["size"] for f in manifest.dir_files or []}
    return {manifest.file: manifest.size}


def object_tags(kind: str, data: bool) -> dict[str, str]:
    """Tags lifecycle rules filter on: the set's kind, and data vs. metadata (only data moves to archive tiers)."""
    return {KIND_TAG: kind, PART_TAG: "data" if data else "meta"}


class LocalStore:
    """``<root>/`` holds dailies, ``<root>/weekly/`` weekly copies (hard links)."""

    location = "local"
    remote = False

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.invalid: dict[str, str] = {}  # manifests of ours that do not hold together: path -> why (never acted on)

    @property
    def where(self) -> str:
        return self.root

    @staticmethod
    def describe(ref: str) -> str:
        """A file of this store as messages show it: its path."""
        return ref

    def dir(self, kind: str) -> str:
        return os.path.join(self.root, "weekly") if kind == "weekly" else self.root

    def path(self, kind: str, name: str) -> str:
        return os.path.join(self.dir(kind), name)

    def ensure_writable(self) -> None:
        for kind in ("daily", "weekly"):
            directory = self.dir(kind)
            try:
                makedirs_owned(directory)
            except OSError as exc:
                raise StorageError(f"cannot create backup directory {directory}: {exc.strerror}; create it owned by "
                                   "the user running the backup (the backup role does).") from None
            if not os.access(directory, os.W_OK | os.X_OK):
                raise StorageError(f"backup directory {directory} is not writable by uid {os.geteuid()}: fix its owner "
                                   "or mode (the backup role sets them), or choose another backup_dir.")

    def _entries(self) -> Iterator[tuple[str, str, str]]:
        """(kind, directory, name) of every file in the daily and weekly directories."""
        for kind in ("daily", "weekly"):
            directory = self.dir(kind)
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
            for name in names:
                yield kind, directory, name

    def list(self, db: str | None = None, source_type: str | None = "database") -> list[Manifest]:
        """Complete sets, newest first: of database (or file set) ``db``, of ``source_type`` (None: every type)."""
        found: list[Manifest] = []
        for kind, directory, name in self._entries():
            if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
                continue
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as handle:
                    manifest = parse_manifest(handle.read(), name, self.location, path, db, source_type, self.invalid)
            except OSError:
                continue
            if manifest is None or manifest.kind != kind or (db and manifest.name != db):
                continue
            if source_type and manifest.source_type != source_type:
                continue
            if not all(os.path.isfile(os.path.join(directory, name)) and not os.path.islink(os.path.join(directory, name))
                       and os.path.getsize(os.path.join(directory, name)) == size
                       for name, size in data_sizes(manifest).items()):
                continue  # damaged: never listed as complete, never counted by retention
            found.append(manifest)
        return newest_first(found)

    def data_path(self, manifest: Manifest) -> str:
        return os.path.join(os.path.dirname(manifest.origin), manifest.file)

    def sibling(self, manifest: Manifest, name: str) -> str:
        return os.path.join(os.path.dirname(manifest.origin), name)

    def local_path(self, manifest: Manifest, name: str | None = None) -> str | None:
        """Where ``name`` (default: the data file) of the set can be read on this host: in place."""
        return self.sibling(manifest, name or manifest.file)

    def open(self, manifest: Manifest, name: str | None = None) -> IO[bytes]:
        return open(self.sibling(manifest, name or manifest.file), "rb")  # pylint: disable=consider-using-with

    @staticmethod
    def read_manifest(ref: str) -> bytes | None:
        """A manifest's bytes; None when it does not exist."""
        try:
            with open(ref, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {ref}: {exc.strerror}.") from None

    @staticmethod
    def put(ref: str, data: bytes, kind: str) -> str:  # pylint: disable=unused-argument  # kind: S3's object tag
        """Write a small metadata file (checksum file, manifest) atomically; its ref."""
        write_file_atomic(ref, data)
        return ref

    def commit_manifest(self, manifest: Manifest) -> Manifest:
        path = self.put(self.path(manifest.kind, manifest.manifest_name), manifest.to_json(), manifest.kind)
        fsync_dir(os.path.dirname(path))
        return dataclasses.replace(manifest, location=self.location, origin=path)

    def delete(self, manifest: Manifest) -> None:
        self.remove([self.sibling(manifest, name) for name in reversed(manifest.files())])

    def remove(self, paths: list[str]) -> None:
        """Delete files of backup sets, refusing them all if one is not directly in the daily or weekly directory.

        The last guard against a name that leads elsewhere (``..``, an absolute
        path, a symlinked directory): the directory part is resolved
        (realpath); the file itself may be a symlink, which unlinking removes,
        never its target. A directory backup's files may be one level down, in
        a ``<id>.dir`` of those directories, which goes once empty; a ``.dir``
        itself (an interrupted run's) goes with what is in it.
        """
        homes = {os.path.realpath(self.dir("daily")), os.path.realpath(self.dir("weekly"))}

        def inside(path: str) -> bool:
            parent = os.path.dirname(path)
            if os.path.basename(path) in ("", ".", ".."):
                return False
            if os.path.realpath(parent) in homes:
                return True
            return (parent.endswith("." + DIR_EXT) and not os.path.islink(parent)
                    and os.path.realpath(os.path.dirname(parent)) in homes)

        outside = [p for p in paths if not inside(p)]
        if outside:
            raise RefusedDelete(f"refusing to delete {', '.join(outside)}: not a file in {self.root} or its weekly/ "
                                "directory (a manifest naming it is not this tool's); nothing of that set was deleted.")
        emptied = []
        for path in paths:
            if path.endswith("." + DIR_EXT) and os.path.isdir(path) and not os.path.islink(path):
                for _attempt in range(3):  # an orphaned pg_dump of the dead run may still write in it
                    stop_writers(path)
                    shutil.rmtree(path, ignore_errors=True)
                    if not os.path.lexists(path):
                        break
                continue
            remove_quietly(path)
            if os.path.realpath(os.path.dirname(path)) not in homes:
                emptied.append(os.path.dirname(path))
        for directory in dict.fromkeys(emptied):
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty (a file no manifest lists): the next run's leftovers take it

    @staticmethod
    def archived(manifest: Manifest, name: str) -> tuple[str, str] | None:  # pylint: disable=unused-argument
        """On disk nothing is in an archive tier."""
        return None

    @staticmethod
    def request_restore(ref: str, days: int, tier: str) -> None:  # pylint: disable=unused-argument
        """Nothing to bring back from an archive tier on disk."""

    @staticmethod
    def unfinished_uploads(db: str, source_type: str = "database") -> list[dict[str, str]]:  # pylint: disable=unused-argument
        """Files on disk are written whole or left as partial files (``leftovers``): no uploads to abort."""
        return []

    @staticmethod
    def abort_uploads(uploads: list[dict[str, str]]) -> None:  # pylint: disable=unused-argument
        """No multipart uploads on disk."""

    def leftovers(self, db: str, source_type: str = "database") -> list[str]:
        """Files of ``db`` in our naming that belong to no complete set: partials, crash remains.

        Invalid manifests and the files of the sets they name stay (they are
        reported instead): an unreadable commit point is not proof of a crash.
        """
        complete: set[str] = set()
        for manifest in self.list(db, source_type):
            complete.update(self.sibling(manifest, n) for n in manifest.files() + [manifest.file])
        return [os.path.join(directory, name) for _kind, directory, name in self._entries()
                if belongs_to(name, db, source_type) and os.path.join(directory, name) not in complete
                and not beside_invalid(os.path.join(directory, name), self.invalid)]

    def add_weekly(self, manifest: Manifest, s3_weekly: dict[str, Any] | None) -> Manifest:
        """Hard-link a daily set into ``weekly/`` (no extra space) with its own manifest."""
        for name in manifest.files()[:-1]:
            target = self.path("weekly", name)
            remove_quietly(target)
            try:
                if "/" in name:
                    makedirs_owned(os.path.dirname(target))  # weekly/<id>.dir/
                os.link(self.sibling(manifest, name), target)
            except OSError as exc:
                raise StorageError(f"cannot link {name} into {self.dir('weekly')}: {exc.strerror}.") from None
        weekly = dataclasses.replace(manifest, kind="weekly", s3=s3_weekly)
        return self.commit_manifest(weekly)


class S3Store:
    """Dailies under ``<prefix>/<db>/<YYYY-MM-DD>/``, weeklies under ``<prefix>/weekly/<db>/<YYYY-MM-DD>/``."""

    location = "s3"
    remote = True

    def __init__(self, cfg: s3util.S3Config, client: Any = None) -> None:
        self.cfg = cfg
        self.client = client or s3util.s3_client(cfg)
        self.invalid: dict[str, str] = {}  # manifests of ours that do not hold together: key -> why (never acted on)

    @property
    def where(self) -> str:
        return self.cfg.where

    def describe(self, ref: str) -> str:
        """An object of this store as messages show it: its s3:// URI."""
        return self.cfg.uri(ref)

    def dir_key(self, kind: str, db: str, date: str) -> str:
        """The folder of one day's sets of ``db`` (its name encoded: one ASCII key segment, see encode_name)."""
        name = encode_name(db)
        return self.cfg.key("weekly", name, date) if kind == "weekly" else self.cfg.key(name, date)

    def _db_prefixes(self, db: str | None) -> list[str]:
        if db is None:
            return [self.cfg.key() + "/" if self.cfg.key() else ""]
        # the encoded name, and the name as versions before 0.2 spelt the folders (catalog.name_forms)
        return [self.cfg.key(*parts, form) + "/" for parts in ((), ("weekly",)) for form in name_forms(db)]

    def check_bucket(self) -> None:
        with s3util.s3_errors("access check (HEAD bucket)", self.cfg.where):
            self.client.head_bucket(Bucket=self.cfg.bucket)

    def _objects(self, db: str | None) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for prefix in self._db_prefixes(db):
            with s3util.s3_errors("listing", self.cfg.uri(prefix)):
                for page in paginator.paginate(Bucket=self.cfg.bucket, Prefix=prefix):
                    yield from page.get("Contents", [])

    def list(self, db: str | None = None, source_type: str | None = "database") -> list[Manifest]:
        """Complete sets, newest first: of database (or file set) ``db``, of ``source_type`` (None: every type)."""
        objects = {o["Key"]: o for o in self._objects(db)}
        found: list[Manifest] = []
        for key in objects:
            if not key.endswith(MANIFEST_SUFFIX):
                continue
            with s3util.s3_errors("reading manifest", self.cfg.uri(key)):
                raw = self.client.get_object(Bucket=self.cfg.bucket, Key=key)["Body"].read()
            manifest = parse_manifest(raw, posixpath.basename(key), self.location, key, db, source_type, self.invalid)
            if manifest is None or (db and manifest.name != db) or (source_type and manifest.source_type != source_type):
                continue
            data = [objects.get(posixpath.join(posixpath.dirname(key), name)) for name in data_sizes(manifest)]
            if any(o is None or o["Size"] != size for o, size in zip(data, data_sizes(manifest).values())):
                continue
            classes = [o.get("StorageClass", "STANDARD") for o in data]  # an archived file makes the set archived
            storage_class = next((c for c in classes if c in s3util.ARCHIVE_CLASSES), classes[0])
            manifest.s3 = {**(manifest.s3 or {}), "storage_class": storage_class}
            found.append(manifest)
        return newest_first(found)

    def sibling(self, manifest: Manifest, name: str) -> str:
        return posixpath.join(posixpath.dirname(manifest.origin), name)

    def data_key(self, manifest: Manifest) -> str:
        return self.sibling(manifest, manifest.file)

    @staticmethod
    def local_path(manifest: Manifest, name: str | None = None) -> str | None:  # pylint: disable=unused-argument
        """Nothing of S3 is readable in place: download it (``open``)."""
        return None

    def read_manifest(self, ref: str) -> bytes | None:
        """A manifest's bytes; None when it does not exist."""
        with s3util.s3_errors("reading the manifest", self.cfg.uri(ref), expected=("NoSuchKey", "404")):
            return self.client.get_object(Bucket=self.cfg.bucket, Key=ref)["Body"].read()
        return None

    def put(self, ref: str, data: bytes, kind: str) -> str:
        """Upload a small metadata object (checksum file, manifest) in one verified PUT, tagged with ``kind``; its ref."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        with s3util.s3_errors("upload", self.cfg.uri(ref)):
            self.client.put_object(Bucket=self.cfg.bucket, Key=ref, Body=data, ChecksumSHA256=checksum,
                                   Tagging=urlencode(object_tags(kind, data=False)), **self.cfg.write_args(data=False))
        return ref

    def delete(self, manifest: Manifest) -> None:
        keys = [self.sibling(manifest, name) for name in reversed(manifest.files())]
        self.check_keys(keys, manifest.name)
        for key in keys:
            with s3util.s3_errors("delete", self.cfg.uri(key)):
                self.client.delete_object(Bucket=self.cfg.bucket, Key=key)

    def check_keys(self, keys: list[str], db: str | None) -> None:
        """Refuse (all of them) when one key is not under ``db``'s prefixes (None: the job's prefix) or has a ``..``.

        The last guard before a delete: S3 servers resolve ``..`` and a
        leading ``/`` differently, so such a key is never sent.
        """
        prefixes = self._db_prefixes(db)
        outside = [k for k in keys if not self.inside(k, prefixes)]
        if outside:
            raise RefusedDelete(f"refusing to delete {', '.join(self.cfg.uri(k) for k in outside)}: not under "
                                f"{', '.join(self.cfg.uri(p) for p in prefixes)} (a manifest naming it is not this "
                                "tool's); nothing of that set was deleted.")

    def leftovers(self, db: str, source_type: str = "database") -> list[str]:
        """Objects of ``db`` in our naming that no manifest covers (see ``unfinished_uploads`` for the rest)."""
        complete: set[str] = set()
        for manifest in self.list(db, source_type):
            complete.update(self.sibling(manifest, n) for n in manifest.files())
        return [o["Key"] for o in self._objects(db)
                if set_member(self._in_folder(o["Key"]), db, source_type) and o["Key"] not in complete
                and not beside_invalid(o["Key"], self.invalid) and self.inside(o["Key"], self._db_prefixes(db))]

    def unfinished_uploads(self, db: str, source_type: str = "database") -> list[dict[str, str]]:
        """Multipart uploads of ``db`` a killed run never completed: invisible in listings, billed until aborted."""
        uploads: list[dict[str, str]] = []
        for prefix in self._db_prefixes(db):
            with s3util.s3_errors("listing multipart uploads", self.cfg.uri(prefix)):
                resp = self.client.list_multipart_uploads(Bucket=self.cfg.bucket, Prefix=prefix)
            uploads.extend({"Key": u["Key"], "UploadId": u["UploadId"]} for u in resp.get("Uploads", [])
                           if set_member(self._in_folder(u["Key"]), db, source_type)
                           and self.inside(u["Key"], self._db_prefixes(db)))
        return uploads

    @staticmethod
    def _in_folder(key: str) -> str:
        """A key's name in its day's folder: the last segment, or ``<id>.dir/<file>`` for a directory backup's file."""
        parent, name = posixpath.split(key)
        return f"{posixpath.basename(parent)}/{name}" if parent.endswith("." + DIR_EXT) else name

    @staticmethod
    def inside(key: str, prefixes: list[str]) -> bool:
        return any(key.startswith(p) for p in prefixes) and not any(part in ("", ".", "..") for part in key.split("/"))

    def abort_uploads(self, uploads: list[dict[str, str]]) -> None:
        self.check_keys([u["Key"] for u in uploads], None)
        for upload in uploads:
            with s3util.s3_errors("abort of an unfinished upload", self.cfg.uri(upload["Key"])):
                self.client.abort_multipart_upload(Bucket=self.cfg.bucket, **upload)

    def remove(self, keys: list[str]) -> None:
        """Delete objects of backup sets, refusing them all if one is not under the job's prefix (``check_keys``)."""
        self.check_keys(keys, None)
        for key in keys:
            with s3util.s3_errors("delete", self.cfg.uri(key)):
                self.client.delete_object(Bucket=self.cfg.bucket, Key=key)

    def archived(self, manifest: Manifest, name: str) -> tuple[str, str] | None:
        """(storage class, S3's ``Restore`` answer) of a file of the set not readable yet; None when it is readable."""
        key = self.sibling(manifest, name)
        with s3util.s3_errors("HEAD", self.cfg.uri(key)):
            head = self.client.head_object(Bucket=self.cfg.bucket, Key=key)
        storage_class = head.get("StorageClass", "STANDARD")
        restore = head.get("Restore") or ""
        if storage_class not in s3util.ARCHIVE_CLASSES or 'ongoing-request="false"' in restore:
            return None
        return storage_class, restore

    def request_restore(self, ref: str, days: int, tier: str) -> None:
        """Ask S3 to bring an archived object back for ``days`` (one already asked for is no error)."""
        try:
            with s3util.s3_errors("archive restore request", self.cfg.uri(ref), expected=("RestoreAlreadyInProgress",)):
                self.client.restore_object(Bucket=self.cfg.bucket, Key=ref, RestoreRequest={
                    "Days": days, "GlacierJobParameters": {"Tier": tier}})
        except StorageError as exc:
            if exc.code in ("MethodNotAllowed", "NotImplemented"):
                raise StorageError(f"{self.cfg.where} does not support restoring archived objects ({exc.code}): "
                                   "restore the object to a readable storage class with the store's own tools.") from None
            raise

    def add_weekly(self, manifest: Manifest) -> Manifest:
        """Server-side copy of a daily set to the weekly prefix (no re-upload), manifest last."""
        date = manifest.started.strftime("%Y-%m-%d")
        directory = self.dir_key("weekly", manifest.name, date)
        for name in manifest.files()[:-1]:
            data = not name.endswith((".md5", ".sha256"))
            extra = {"TaggingDirective": "REPLACE", "Tagging": urlencode(object_tags("weekly", data)),
                     "MetadataDirective": "COPY", **self.cfg.write_args(data)}
            source = {"Bucket": self.cfg.bucket, "Key": self.sibling(manifest, name)}
            key = f"{directory}/{name}"
            with s3util.s3_errors("server-side copy", self.cfg.uri(key)):
                self.client.copy(CopySource=source, Bucket=self.cfg.bucket, Key=key, ExtraArgs=extra)
        weekly = dataclasses.replace(manifest, kind="weekly", s3=self.location_facts(f"{directory}/{manifest.file}"))
        return self.commit_manifest(weekly)

    def location_facts(self, key: str) -> dict[str, Any]:
        return {"bucket": self.cfg.bucket, "key": key, "uri": self.cfg.uri(key), "endpoint_url": self.cfg.endpoint_url,
                "storage_class": self.cfg.storage_class, "encryption": self.cfg.encryption}

    def commit_manifest(self, manifest: Manifest) -> Manifest:
        key = posixpath.join(posixpath.dirname(manifest.s3["key"]), manifest.manifest_name)
        self.put(key, manifest.to_json(), manifest.kind)
        return dataclasses.replace(manifest, location=self.location, origin=key)

    def open(self, manifest: Manifest, name: str | None = None):
        key = self.sibling(manifest, name or manifest.file)
        with s3util.s3_errors("download", self.cfg.uri(key)):
            return self.client.get_object(Bucket=self.cfg.bucket, Key=key)["Body"]


def invalid_notes(store: LocalStore | S3Store) -> list[tuple[str, str]]:
    """(where, warning) for each manifest ``store``'s listings so far ignored as invalid (``parse_manifest``)."""
    notes = []
    for origin, why in sorted(store.invalid.items()):
        where = store.describe(origin)
        notes.append((where, f"manifest {where} ignored (never listed, followed or deleted): {why}. This tool did not "
                             "write it for that file: find out who put it there, then move or delete it by hand."))
    return notes
