# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding a backup through its manifest and reading it back verified: one engine for every restore.

Database restores (restore.py), file-set restores (files_restore_job.py) and the drills
that run them find and fetch their backup here, so the rules are the same for
both kinds:

- no manifest, no restore; a manifest of the other type of backup is refused
  with the name of the module that restores it;
- an object in GLACIER or DEEP_ARCHIVE is brought back first: HEAD, a restore
  request (tier, days), then polling up to ``archive.wait_timeout`` or a ``pending``
  result that tells when to come back (running again is safe: no second
  request is made while one is in progress);
- every byte is hashed once while it is read and compared with the manifest
  before anything else happens; a mismatch is an IntegrityError and leaves
  no download behind.

Only the words differ (a database vs. a file set, which option names it,
what stays untouched): a ``Wording`` carries them. The frame both restores
run in is ``restore_run.RestoreRun``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import MANIFEST_SUFFIX, Manifest, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import (
    ConfigError, IntegrityError, StorageError,
)
from ansible_collections.doctorq.backup.plugins.module_utils.listing import ignored, list_reachable, s3_unavailable
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import makedirs_owned
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store

TIERS = ("Expedited", "Standard", "Bulk")
TIER_DELAYS = {"Expedited": "1-5 minutes", "Standard": "3-5 hours (12 for DEEP_ARCHIVE)",
               "Bulk": "5-12 hours (48 for DEEP_ARCHIVE)"}
RESTORED_BY = {"database": "pg_restore_safe", "file_set": "files_restore"}
# a backup dated later than this after the current time was made under a clock that was ahead
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


def safety_argument_spec() -> dict[str, Any]:
    """The ``safety`` option of every restore: the backup of what it replaces (doc fragment ``doctorq.backup.restore``)."""
    return dict(safety=dict(type="dict", options=dict(backup=dict(type="bool", default=True), dir=dict(type="path"))))


def archive_argument_spec() -> dict[str, Any]:
    """The ``archive`` option of every restore (doc fragment ``doctorq.backup.restore``; edit them together)."""
    return dict(archive=dict(type="dict", options=dict(
        tier=dict(type="str", default="Standard", choices=list(TIERS)),
        days=dict(type="int", default=1),
        wait_timeout=dict(type="int", default=0),
        poll_interval=dict(type="int", default=30),
    )))


@dataclasses.dataclass(frozen=True)
class ArchiveOptions:
    """How to bring back an object from an archive tier, and how long to wait for it."""

    tier: str = "Standard"
    days: int = 1
    wait_timeout: int = 0
    poll_interval: int = 30

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "ArchiveOptions":
        """The ``archive`` option of ``params``, checked."""
        given = params.get("archive") or {}
        if (given.get("wait_timeout") or 0) < 0:
            raise ConfigError("archive.wait_timeout must not be negative.")
        if (given.get("days") or 1) < 1 or (given.get("poll_interval") or 30) < 1:
            raise ConfigError("archive.days and archive.poll_interval must be at least 1.")
        return cls(tier=given.get("tier") or "Standard", days=given.get("days") or 1,
                   wait_timeout=given.get("wait_timeout") or 0, poll_interval=given.get("poll_interval") or 30)


def parse_when(text: str | None) -> dt.datetime | None:
    """``before``: ISO 8601 (``2025-11-07T02:00:00Z``, with an offset) or ``YYYY-mm-dd HH:MM:SS`` (UTC)."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"before={text!r} is not a date and time: use e.g. 2025-11-07T02:00:00Z.") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def check_source(src: str) -> str:
    """``source`` as given; an s3:// URI is checked before any work: a bucket name, a plain key (no ``..``, no ``//``)."""
    if src.startswith("s3://"):
        split_s3_uri(src)
    return src


def split_s3_uri(src: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key), or a ConfigError naming ``source`` and what is wrong with it."""
    bucket, _slash, key = src[5:].partition("/")
    s3util.check_bucket_name(bucket, f"the bucket in source {src!r}")
    s3util.check_key_path(key, f"the key in source {src!r}", allow_empty=False)
    return bucket, key


def add_duration(durations: dict[str, float], phase: str, started: float) -> None:
    """Add the seconds since ``started`` (monotonic) to ``phase``."""
    durations[phase] = round(durations.get(phase, 0.0) + time.monotonic() - started, 3)


@dataclasses.dataclass(frozen=True)
class Wording:
    """What the messages of one type of restore call things."""

    source_type: str  # the manifest's source_type
    subject: str  # "no complete backup of <subject> 'name'"
    noun: str  # "not <a noun>"
    selector: str  # the option that names what ``latest`` searches
    lister: str  # how to list complete backups of this type
    untouched: str  # what a failed verification leaves as it was
    unchanged: str  # what a pending archive restore has not changed yet


DATABASE = Wording(source_type="database", subject="database", noun="a database backup", selector="source_db",
                   lister="backup_info", untouched="the target database", unchanged="the database")
FILES = Wording(source_type="file_set", subject="file set", noun="a file backup", selector="name",
                lister="backup_info source_type=file_set", untouched="the target", unchanged="the target directory")


@dataclasses.dataclass
class Source:
    """The backup a restore reads: its manifest and the store holding it."""

    manifest: Manifest
    store: LocalStore | S3Store

    @property
    def ref(self) -> str:
        return self.store.describe(self.store.sibling(self.manifest, self.manifest.file))

    def expected(self, name: str) -> tuple[int, str, str]:
        """Size, SHA-256 and MD5 the manifest records for ``name`` (the data file or the globals file)."""
        m = self.manifest
        if name == m.file:
            return m.size, m.sha256, m.md5
        if m.globals and name == m.globals.get("file"):
            return m.globals["size"], m.globals["sha256"], m.globals["md5"]
        raise StorageError(f"{name} is not a file of backup {m.id}.")


class Sources:
    """Where one restore looks for its backup, and how it reads it back.

    ``result`` and ``durations`` are the run's own: the archive state per
    file, ``changed`` (an archive restore request is a change), ``pending``
    and ``msg``, and the ``verify``/``download`` times are recorded there;
    ``s3_error`` too, with a line in ``warnings``, when ``latest`` had to do
    without S3 (it could not be listed) and took the local copies.
    """

    def __init__(self, wording: Wording, backup_dir: str, s3: s3util.S3Config | None, *,
                 archive: ArchiveOptions = ArchiveOptions(), work_dir: str | None = None,
                 result: dict[str, Any] | None = None, durations: dict[str, float] | None = None,
                 warnings: list[str] | None = None) -> None:
        self.wording = wording
        self.backup_dir = backup_dir
        self.local = LocalStore(backup_dir)
        self.s3 = s3
        self.archive = archive
        self._work_dir = work_dir
        self.result = result if result is not None else {}
        self.durations = durations if durations is not None else {}
        self.warnings = warnings if warnings is not None else []
        self.requested = False

    def s3_store(self, bucket: str | None = None) -> S3Store:
        cfg = self.s3 or s3util.S3Config(bucket=bucket or "")
        if bucket and bucket != cfg.bucket:
            cfg = dataclasses.replace(cfg, bucket=bucket)
        return S3Store(cfg)

    def work_dir(self) -> str:
        """Where downloads (and decompressed copies) go: ``work_dir`` or ``<backup_dir>/.restore-work``, 0700."""
        path = self._work_dir or os.path.join(self.backup_dir, ".restore-work")
        makedirs_owned(path)
        return path

    # -- finding ---------------------------------------------------------------------
    def find(self, src: str, name: str | None, before: dt.datetime | None, log: RunLog) -> Source:
        """``src``: ``latest`` (the newest complete backup of ``name``), a local backup file or an s3:// URI."""
        if src.startswith("s3://"):
            return self._from_s3(src)
        if src != "latest":
            return self._from_path(src)
        stores: list[LocalStore | S3Store] = [self.local] + ([self.s3_store()] if self.s3 else [])
        listed, s3_problem = list_reachable(stores, name, self.wording.source_type)
        for warning in ignored(stores):  # a planted manifest is never followed, and the operator hears of it
            log(f"WARNING: {warning}")
            self.warnings.append(warning)
        if s3_problem:  # S3 down is the disaster case: go on with the local copies, and say so
            self.result["s3_error"] = s3_problem
            warning = s3_unavailable(s3_problem, self.backup_dir)
            log(f"WARNING: {warning}")
            self.warnings.append(warning)
        now = utcnow()
        future = sorted({m.id for m in listed if m.started > now + FUTURE_TOLERANCE})
        if future:  # made while the clock was ahead: never "the newest", or it would shadow every real backup
            warning = (f"skipped {len(future)} backup(s) dated after the current time ({', '.join(future)}): the clock "
                       "was ahead when they were made, or is behind now; check the time (timedatectl), and name one "
                       "explicitly as the source if it is the one you want.")
            log(f"WARNING: {warning}")
            self.warnings.append(warning)
        found = [m for m in listed if m.id not in future and (not before or m.started < before)]
        if not found:
            where = " and ".join([self.backup_dir] + ([self.s3.where] if self.s3 and not s3_problem else []))
            when = f" before {iso(before)}" if before else ""
            unavailable = f" (S3 could not be searched: {s3_problem})" if s3_problem else ""
            raise StorageError(f"no complete backup of {self.wording.subject} {name!r}{when} in {where}{unavailable}: "
                               f"check {self.wording.selector}/backup_dir/s3, or list backups with {self.wording.lister}.")
        # The same backup on disk and in S3: the local copy needs no download.
        same = [m for m in found if m.id == found[0].id]
        chosen = next((m for m in same if m.location == "local"), same[0])
        log(f"Newest complete backup of {self.wording.subject} {name!r}: {chosen.id} ({chosen.location}, {chosen.kind})")
        return Source(chosen, self.local if chosen.location == "local" else stores[-1])

    def _from_s3(self, src: str) -> Source:
        bucket, key = split_s3_uri(src)
        key = key[:-len(MANIFEST_SUFFIX)] if key.endswith(MANIFEST_SUFFIX) else key
        store = self.s3_store(bucket)
        raw = store.read_manifest(key + MANIFEST_SUFFIX)
        if raw is None:
            raise StorageError(f"{src} has no manifest ({key + MANIFEST_SUFFIX}): it is not a complete backup written "
                               f"by doctorq.backup; refusing to restore it. List complete backups with {self.wording.lister}.")
        return Source(self._checked(raw, "s3", key + MANIFEST_SUFFIX, os.path.basename(key), src), store)

    def _from_path(self, src: str) -> Source:
        path = os.path.abspath(src[:-len(MANIFEST_SUFFIX)] if src.endswith(MANIFEST_SUFFIX) else src)
        raw = self.local.read_manifest(path + MANIFEST_SUFFIX)
        if raw is None:
            raise StorageError(f"{path} has no manifest ({path + MANIFEST_SUFFIX}): it is not a complete backup "
                               "written by doctorq.backup (an interrupted run leaves no manifest); refusing to "
                               f"restore it. List complete backups with {self.wording.lister}.")
        return Source(self._checked(raw, "local", path + MANIFEST_SUFFIX, os.path.basename(path), src), self.local)

    def _checked(self, raw: bytes, location: str, origin: str, name: str, src: str) -> Manifest:
        manifest = Manifest.from_json(raw, location=location, origin=origin)
        if manifest is None or manifest.file != name:
            raise StorageError(f"the manifest of {src} is not a doctorq.backup manifest for that file; refusing to restore it.")
        if manifest.source_type != self.wording.source_type:
            raise ConfigError(f"{src} is a {manifest.source_type.replace('_', ' ')} backup, not {self.wording.noun}: "
                              f"restore it with {RESTORED_BY[manifest.source_type]}.")
        return manifest

    # -- archive tiers ----------------------------------------------------------------
    def archive_state(self, source: Source, names: list[str], *, request: bool) -> str:
        """``available`` or ``pending``; with ``request``, asks for the restore of objects still in a cold tier."""
        store = source.store
        pending = []
        for name in names:
            archived = self._archived(source, name)
            if archived is None:
                continue
            storage_class, restore = archived
            state = self.result.setdefault("archive", {})
            state[name] = {"storage_class": storage_class, "restore": "in progress" if restore else "not requested"}
            if not restore and request:
                store.request_restore(store.sibling(source.manifest, name), self.archive.days, self.archive.tier)
                state[name]["restore"] = "requested"
                self.requested = True
                self.result["changed"] = True
            pending.append(name)
        return "pending" if pending else "available"

    def _archived(self, source: Source, name: str) -> tuple[str, str] | None:
        """``store.archived``; an object the manifest lists but the store lacks is a damaged backup (IntegrityError)."""
        try:
            return source.store.archived(source.manifest, name)
        except StorageError as exc:
            if exc.code not in ("404", "NoSuchKey", "NotFound"):
                raise
            where = source.store.describe(source.store.sibling(source.manifest, name))
            raise IntegrityError(f"file {name} of backup {source.manifest.id} is missing: {where} does not exist, "
                                 f"though the manifest lists it. The backup is damaged; {self.wording.untouched} was "
                                 f"not touched. Restore another backup ({self.wording.lister} lists them).") from None

    def wait_for_archive(self, source: Source, names: list[str], log: RunLog) -> str:
        """Request what is archived, poll up to ``archive.wait_timeout``; ``pending`` (with ``msg`` set) if still not back."""
        archive = self.archive
        state = self.archive_state(source, names, request=True)
        deadline = time.monotonic() + archive.wait_timeout
        while state == "pending" and time.monotonic() < deadline:
            log(f"Waiting for the archive restore of {source.manifest.id} ({archive.tier} tier)...")
            time.sleep(min(archive.poll_interval, max(0.0, deadline - time.monotonic())))
            state = self.archive_state(source, names, request=False)
        if state == "pending":
            msg = (f"{source.ref} is in an archive tier; the restore from the archive is "
                   f"{'requested' if self.requested else 'in progress'} ({archive.tier}, usually "
                   f"{TIER_DELAYS[archive.tier]}). Run this restore again later; it picks up where it left off. "
                   f"Nothing was changed in {self.wording.unchanged}.")
            log(msg)
            self.result.update(pending=True, msg=msg)
        return state

    # -- reading, verified -------------------------------------------------------------
    def fetch_verified(self, source: Source, name: str, log: RunLog, *, keep: bool) -> str | None:
        """Read ``name`` once, hashing it; a local path of the verified bytes (None for a download not ``keep``)."""
        size, sha256, md5 = source.expected(name)
        started = time.monotonic()
        partial = None
        path = source.store.local_path(source.manifest, name)
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    digest = pipeline.copy_hashed(handle)
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc.strerror}.") from None
            add_duration(self.durations, "verify", started)
        else:
            path = os.path.join(self.work_dir(), name) if keep else None
            partial = path + ".partial" if path else None
            body = source.store.open(source.manifest, name)
            try:
                out = open(partial, "wb") if partial else None  # pylint: disable=consider-using-with
                try:
                    with s3util.s3_errors("download", source.store.describe(source.store.sibling(source.manifest, name))):
                        digest = pipeline.copy_hashed(body, out)
                finally:
                    if out:
                        out.close()
            except BaseException:
                if partial:
                    pipeline.remove_quietly(partial)
                raise
            finally:
                body.close()
            add_duration(self.durations, "download", started)
            log(f"Downloaded {name} ({human(digest.size)}) in {time.monotonic() - started:.1f}s")
        if (digest.size, digest.sha256, digest.md5) != (size, sha256, md5):
            if partial:
                pipeline.remove_quietly(partial)
            raise IntegrityError(
                f"checksum mismatch for {name}: read {digest.size} bytes with sha256 {digest.sha256} and md5 "
                f"{digest.md5}, the manifest says {size} bytes, sha256 {sha256}, md5 {md5}. The backup is damaged; "
                f"{self.wording.untouched} was not touched. Restore another backup ({self.wording.lister} lists them).")
        if partial:
            os.rename(partial, path)
        log(f"Checksums verified (SHA-256 and MD5) for {name}")
        return path
