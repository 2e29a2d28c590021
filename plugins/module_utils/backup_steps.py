# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The steps every backup job takes, whatever it streams (a database dump, a tar of files).

Stream one artifact to disk and S3 at once, write its checksum files, commit
the manifest (S3 first, local last), copy the set to the weekly store, clean
up crash leftovers, apply retention, and upload the sets an earlier run could
not (catch-up). Each step works on a set's *name*
(the database's, or the file set's) and *source type* (``database``/``file_set``,
see catalog.SOURCE_TYPES), so one never touches the other's files even when a
database and a file set share a name and a directory.

S3 is the off-site copy, never a reason to go without a backup: when it
fails (unreachable, refused credentials, bucket missing, an upload cut short)
the run goes on with the local copy, weekly link and local retention, skips
the S3 work that is left, and fails at the end with ``Stores.raise_for_s3``'s
message, which says what is safe where and what to do.

``backup.py`` (databases) and ``files_backup_job.py`` (file sets) both run their jobs
from these steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import posixpath
from typing import Any, Callable, Iterator, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils import backup_directory, pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, checksum_line, iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.retention import clock_behind, to_delete
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog, expired_logs
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config
from ansible_collections.doctorq.backup.plugins.module_utils.storage import (
    LocalStore, RefusedDelete, S3Store, invalid_notes, object_tags,
)


@dataclasses.dataclass(frozen=True)
class DatabaseBackups:
    """A database on its server and where its backups live (disk, S3): what its backup and drill jobs start from."""

    conn: PgConn
    db: str
    backup_dir: str
    s3: S3Config | None = None


@dataclasses.dataclass
class Stores:
    """The local store, and the S3 store when configured, of one name and source type.

    ``s3`` becomes None at the first S3 failure of the run (``s3_problem`` says
    why): every later step then works on the local store only.
    """

    local: LocalStore
    s3: S3Store | None
    name: str
    source_type: str
    s3_problem: str | None = None
    s3_where: str = ""
    _warned: bool = dataclasses.field(default=False, repr=False)
    # retention_min_count: complete backups of each kind kept whatever their dates (retention.to_delete)
    min_count: int = 1
    # the run's warnings (the job's result shares this list): ignored manifests, refused deletions, clock
    warnings: list[str] = dataclasses.field(default_factory=list)
    _reported: set[str] = dataclasses.field(default_factory=set, repr=False)
    _listed: list[Any] = dataclasses.field(default_factory=list, repr=False)
    # what this run wrote for its set until the manifest commits it: ("local", path) or ("s3", key); see discard
    _uncommitted: list[tuple[str, str]] = dataclasses.field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.s3_where = self.s3.cfg.where if self.s3 else ""
        self._listed = [self.local] + ([self.s3] if self.s3 else [])  # S3's findings are reported even after it failed

    def warn(self, message: str, log: RunLog) -> None:
        """A warning in the run log and in the result; the run goes on."""
        log(f"WARNING: {message}")
        self.warnings.append(message)

    def report_invalid(self, log: RunLog) -> None:
        """Warn (once each) about the manifests the listings so far ignored as invalid (storage.parse_manifest)."""
        for store in self._listed:
            for where, warning in invalid_notes(store):
                if where not in self._reported:
                    self._reported.add(where)
                    self.warn(warning, log)

    # -- S3 trouble: go on locally, fail at the end ---------------------------
    def s3_failed(self, error: str, log: RunLog | None) -> None:
        """Remember the (first) S3 failure and go on without S3 for the rest of the run."""
        if self.s3_problem is None:
            self.s3_problem = error
        self.s3 = None
        if log is not None and not self._warned:
            self._warned = True
            log(f"WARNING: {self.s3_problem} Going on without S3: the backup is kept on disk, the rest of this "
                "run's S3 work is skipped, and the run fails at its end.")

    def check_access(self, log: RunLog) -> None:
        """Check mode: S3 access is part of what is checked, so a refusal fails the check."""
        self.open_s3(log, check_mode=True)

    def open_s3(self, log: RunLog, *, check_mode: bool = False) -> None:
        """Check S3 access before the run; when S3 refuses, the run goes on local-only (in check mode: fails)."""
        if not self.s3:
            return
        try:
            self.s3.check_bucket()
        except StorageError as exc:
            if check_mode:
                raise StorageError(f"{exc} (A real run would still write the local backup, skip S3, and fail at its "
                                   "end with this error.)", code=exc.code) from None
            self.s3_failed(str(exc), log)
            return
        if check_mode:
            log(f"Bucket {self.s3_where} reachable")

    def raise_for_s3(self, path: str, s3_uri: str | None, backup_id: str) -> None:
        """End of the run: fail it when S3 failed, saying what is safe where and what to do next."""
        if not self.s3_problem:
            return
        if s3_uri:
            raise StorageError(f"{self.s3_problem} The backup itself is complete on disk ({path}) and in S3 "
                               f"({s3_uri}); the S3 work left after the failure (weekly copy, retention or catch-up "
                               "uploads) was skipped, and the next run that reaches S3 does it.")
        del backup_id  # every complete local backup that never reached S3 is caught up (pending_uploads)
        then = ("that run uploads its own backup and catches up this one too (every complete local backup that never "
                "reached S3 and that S3 retention keeps)")
        raise StorageError(f"{self.s3_problem} The local backup {path} is complete and kept (checksum files and "
                           "manifest written; the local weekly copy and retention ran as usual), but it has no copy in "
                           f"{self.s3_where}, and this run's S3 cleanup and retention were skipped. Once S3 works "
                           f"again, run the backup again or let the next scheduled run do it: {then}, and it removes "
                           "anything this run left unfinished in S3.")

    # -- the steps --------------------------------------------------------------
    def clean_leftovers(self, log: RunLog) -> list[str]:
        """Remove partial files, crash remains and unfinished uploads of this owner and type."""
        removed = self.local.leftovers(self.name, self.source_type)
        try:
            self.local.remove(removed)
        except RefusedDelete as exc:
            self.warn(str(exc), log)
            removed = []
        if self.s3:
            try:
                stray = self.s3.leftovers(self.name, self.source_type)
                uploads = self.s3.unfinished_uploads(self.name, self.source_type)
                self.s3.abort_uploads(uploads)
                self.s3.remove(stray)
            except RefusedDelete as exc:
                self.warn(str(exc), log)
            except StorageError as exc:
                self.s3_failed(str(exc), log)
            else:
                removed += [self.s3.describe(k) for k in stray] + [self.s3.describe(u["Key"]) + " (unfinished upload)"
                                                                   for u in uploads]
        if removed:
            log(f"Removed {len(removed)} leftover(s) of interrupted runs: {', '.join(os.path.basename(r) for r in removed)}")
        self.report_invalid(log)
        return removed

    def retention(self, now: dt.datetime, keep_days: dict[str, int | None], log: RunLog, *,
                  check_mode: bool, planned: Sequence[Manifest] = ()) -> list[dict[str, str]]:
        """Delete what the policy no longer keeps; S3 only while S3 works (decisions are per location).

        ``planned``: in check mode, the sets the run would add first (``plan``),
        which count like the others, so the plan is what the run deletes.
        """
        log("Applying retention..." if not check_mode else "Retention (check mode, nothing deleted):")
        manifests = self.local.list(self.name, self.source_type)
        if self.s3:
            try:
                manifests += self.s3.list(self.name, self.source_type)
            except StorageError as exc:
                if check_mode:
                    raise
                self.s3_failed(str(exc), log)
        manifests += list(planned)
        self.report_invalid(log)
        ahead = clock_behind(manifests, now)
        if ahead is not None:
            self.warn(f"retention skipped, nothing deleted: backup {ahead.id} ({ahead.location}) is recorded as started "
                      f"at {ahead.started_at}, after this run's clock ({iso(now)}). Either the clock went back or that "
                      "backup was made while the clock was ahead. Check the clock (timedatectl, NTP); if that backup's "
                      "date is wrong, move or delete it by hand (it lists as the newest, so source=latest picks it). "
                      "Retention resumes once no backup is dated in the future.", log)
            return []
        doomed = to_delete(manifests, now, keep_days, self.min_count)
        done = []
        for manifest in doomed:
            if not check_mode:
                try:
                    if manifest.location == "s3":
                        if not self.s3:
                            continue
                        self.s3.delete(manifest)
                    else:
                        self.local.delete(manifest)
                except RefusedDelete as exc:
                    self.warn(str(exc), log)
                    continue
                except StorageError as exc:
                    if manifest.location != "s3":
                        raise
                    self.s3_failed(str(exc), log)
                    continue
            done.append(manifest)
            log(f"{'Would delete' if check_mode else 'Deleted'} {manifest.kind} backup {manifest.id} ({manifest.location})")
        log("Retention done" + (f": {len(done)} backup(s) removed" if done and not check_mode else ""))
        self.prune_logs(now, keep_days, log, check_mode=check_mode)
        return [{"id": m.id, "kind": m.kind, "location": m.location, "origin": m.origin} for m in done]

    @staticmethod
    def prune_logs(now: dt.datetime, keep_days: dict[str, int | None], log: RunLog, *, check_mode: bool) -> list[str]:
        """This job's earlier run logs, kept as long as the longest-kept backups (weekly ones)."""
        kept = list(keep_days.values())
        forever = not kept or any(not days for days in kept)  # 0 / None keep a kind for ever (retention.to_delete)
        old = expired_logs(log.path, now, None if forever else max(kept))
        for path in old:
            if not check_mode:
                pipeline.remove_quietly(path)
        if old:
            log(f"{'Would remove' if check_mode else 'Removed'} {len(old)} run log(s) older than the backups kept")
        return old

    def s3_key(self, started: dt.datetime, name: str) -> str:
        return f"{self.s3.dir_key('daily', self.name, started.strftime('%Y-%m-%d'))}/{name}"

    def data_sink(self, key: str, backup_id: str, *, kind_tag: str = "daily",
                  tolerate_failure: bool = False) -> pipeline.S3Sink:
        return pipeline.S3Sink(self.s3.client, self.s3.cfg, key, tags=object_tags(kind_tag, data=True),
                               metadata={"backup-id": backup_id}, tolerate_failure=tolerate_failure)

    def _facts(self, result: dict[str, Any]) -> dict[str, Any]:
        """Where the object is, and where its checksums live (see pipeline.S3Sink)."""
        return {**self.s3.location_facts(result["key"]), "checksum": result["checksum"],
                "sha256_metadata": result["sha256_metadata"]}

    def stream(self, stages: Sequence[Sequence[str] | None], env: dict[str, str], name: str, started: dt.datetime,
               backup_id: str, names: list[str], *, kind_tag: str = "daily",
               accept: Callable[[int, int, str], bool] | None = None,
               log: RunLog | None = None) -> tuple[pipeline.Digest, dict[str, Any] | None, str | None]:
        """Stream one artifact to disk and S3; its digest, S3 facts, and the S3 error (the local copy is kept)."""
        sinks: list[Any] = [pipeline.LocalSink(self.local.path("daily", name))]
        s3sink = None
        if self.s3:
            s3sink = self.data_sink(self.s3_key(started, name), backup_id, kind_tag=kind_tag, tolerate_failure=True)
            sinks.append(s3sink)
        digest, results = pipeline.run(stages, env, sinks, names=names, accept=accept)
        self._uncommitted.append(("local", self.local.path("daily", name)))
        if s3sink is None:
            return digest, None, self.s3_problem
        if s3sink.error:
            self.s3_failed(str(s3sink.error), log)
            return digest, None, str(s3sink.error)
        self._uncommitted.append(("s3", results[1]["key"]))
        return digest, self._facts(results[1]), None

    def written(self, store: str, ref: str) -> None:
        """A file (``"local"``, path) or object (``"s3"``, key) this run wrote for its set: removed if it fails uncommitted."""
        self._uncommitted.append((store, ref))

    def new_path(self, name: str) -> str:
        """The local path of this run's artifact, which must not exist yet."""
        path = self.local.path("daily", name)
        if os.path.exists(path):
            raise StorageError(f"{path} exists already (two runs in the same second?): run again in a moment.")
        return path

    def put_checksums(self, name: str, digest: pipeline.Digest, log: RunLog) -> None:
        """``<name>.md5`` and ``<name>.sha256`` on disk, as md5sum/sha256sum write them."""
        for suffix, hexdigest in ((".md5", digest.md5), (".sha256", digest.sha256)):
            self._uncommitted.append(("local", self.local.path("daily", name + suffix)))
            self.local.put(self.local.path("daily", name + suffix), checksum_line(hexdigest, name), "daily")
        log("MD5 and SHA-256 checksum files written")

    @contextlib.contextmanager
    def until_committed(self, log: RunLog) -> Iterator[None]:
        """Around a job's steps from its first stream to ``commit``: if one fails, nothing of the set stays.

        Whatever the run wrote for the set (data, checksum files, a staged
        manifest; on disk and in S3) is removed at once (``discard``): a full
        disk gets its space back, and no store lists or keeps a set the run
        reports as failed.
        """
        try:
            yield
        except StorageError as exc:
            removed = self.discard(log)
            if not removed:
                raise
            raise StorageError(f"{exc} {removed}", code=exc.code) from None
        except BaseException:
            self.discard(log)
            raise

    def discard(self, log: RunLog) -> str:
        """Remove what this run wrote for a set it did not commit (newest first); say what became of it ("": nothing)."""
        written, self._uncommitted = self._uncommitted, []
        if not written:
            return ""
        local = [where for store, where in reversed(written) if store == "local"]
        keys = [where for store, where in reversed(written) if store == "s3"]
        left: list[str] = []
        try:
            self.local.remove(local)
        except StorageError as exc:
            left += local
            log(f"WARNING: {exc}")
        if keys and self.s3:
            try:
                self.s3.remove(keys)
            except StorageError as exc:
                left += [self.s3.describe(k) for k in keys]
                log(f"WARNING: {exc}")
        elif keys:
            left += [f"s3 key {k}" for k in keys]  # S3 failed earlier in the run: its leftovers wait for the next one
        log("Removed what this run wrote for its backup" + (f", but for {', '.join(left)} (the next run removes them)"
                                                            if left else " (on disk and in S3)"))
        if left:
            return (f"Nothing of this run's backup is listed; the next run removes what could not be removed now "
                    f"({', '.join(left)}).")
        return "Nothing of this run's backup was kept, on disk or in S3."

    def commit(self, manifest: Manifest, log: RunLog, s3_error: str | None, *,
               checksums_written: bool = False) -> tuple[Manifest, Manifest | None, str | None]:
        """Checksum files and manifest: S3 first, local last (the local manifest is the commit point).

        The local manifest is staged (written to its hidden partial file)
        before the S3 manifest goes up, and renamed into place after it, which
        needs no space: a disk that fills up fails the run before any store
        lists the set. Whatever fails before the commit point, what the run
        wrote for the set is removed (``until_committed``).
        """
        with self.until_committed(log):
            if not checksums_written:
                self.put_checksums(manifest.file, pipeline.Digest(manifest.size, manifest.sha256, manifest.md5), log)
            s3_ready = bool(self.s3 and not s3_error and manifest.s3)
            path = self.local.path(manifest.kind, manifest.manifest_name)
            if not s3_ready:
                manifest = dataclasses.replace(manifest, s3=None)
            self._uncommitted.append(("local", os.path.join(os.path.dirname(path), f".{manifest.manifest_name}.partial")))
            staged = pipeline.stage_file(path, manifest.to_json())
            s3_manifest = None
            if s3_ready:
                s3_dir = posixpath.dirname(manifest.s3["key"])
                self._uncommitted += [("s3", f"{s3_dir}/{manifest.file}{suffix}") for suffix in (".md5", ".sha256")]
                self._uncommitted.append(("s3", f"{s3_dir}/{manifest.manifest_name}"))
                try:
                    s3_manifest = self._commit_s3(manifest)
                    log(f"Uploaded to S3 and verified: {manifest.s3['uri']}")
                except StorageError as exc:
                    s3_error = str(exc)
            if s3_error:
                self.s3_failed(s3_error, log)
                if manifest.s3:  # staged with S3's facts: stage it again without them (smaller, so it fits)
                    manifest = dataclasses.replace(manifest, s3=None)
                    pipeline.remove_quietly(staged)
                    staged = pipeline.stage_file(path, manifest.to_json())
            self._uncommitted.append(("local", path))
            pipeline.publish_staged(staged, path)
            pipeline.fsync_dir(os.path.dirname(path))
        self._uncommitted = []
        local_manifest = dataclasses.replace(manifest, location=self.local.location, origin=path)
        log(f"Manifest written: {local_manifest.origin}")
        return local_manifest, s3_manifest, s3_error

    def _commit_s3(self, manifest: Manifest) -> Manifest:
        name = manifest.file
        s3_dir = posixpath.dirname(manifest.s3["key"])
        for suffix in (".md5", ".sha256"):
            data = (backup_directory.sidecar(self.local.dir("daily"), manifest, suffix) if manifest.is_directory
                    else checksum_line(getattr(manifest, suffix[1:]), name))  # a directory's: one line per file
            self.s3.put(f"{s3_dir}/{name}{suffix}", data, "daily")
        return self.s3.commit_manifest(manifest)

    def weekly(self, local_manifest: Manifest, s3_manifest: Manifest | None, log: RunLog) -> dict[str, Any]:
        """Copy a committed daily set into the weekly store (hard links, server-side copy)."""
        s3_weekly = None
        if self.s3 and s3_manifest:
            try:
                s3_weekly = self.s3.add_weekly(s3_manifest)
            except StorageError as exc:
                self.s3_failed(str(exc), log)
        try:
            weekly = self.local.add_weekly(local_manifest, s3_weekly.s3 if s3_weekly else None)
        except StorageError as exc:
            raise StorageError(f"{exc} {self._undo_weekly(local_manifest, s3_weekly, log)}", code=exc.code) from None
        log(f"Weekly copy made: {os.path.dirname(weekly.origin)}" + (f" and {s3_weekly.s3['uri']}" if s3_weekly else ""))
        return {"weekly": True, "weekly_path": self.local.data_path(weekly),
                "weekly_s3_uri": s3_weekly.s3["uri"] if s3_weekly else None}

    def _undo_weekly(self, local_manifest: Manifest, s3_weekly: Manifest | None, log: RunLog) -> str:
        """The local weekly copy failed (a full disk): remove its links and the S3 weekly copy, so neither lists it."""
        links = dataclasses.replace(local_manifest, kind="weekly", origin=self.local.path("weekly", local_manifest.manifest_name))
        gone = []
        try:
            self.local.delete(links)
        except StorageError as exc:
            log(f"WARNING: {exc}")
        if s3_weekly is not None and self.s3:
            try:
                self.s3.delete(s3_weekly)
                gone.append(f"the weekly copy in S3 ({s3_weekly.s3['uri']}) was removed again")
            except StorageError as exc:
                log(f"WARNING: {exc}")
                gone.append(f"the weekly copy in S3 ({s3_weekly.s3['uri']}) could not be removed ({exc}) and is listed")
        return (f"The backup {local_manifest.id} itself is complete ({local_manifest.origin}"
                + (f" and {local_manifest.s3['uri']}" if local_manifest.s3 else "") + "); its weekly copy was not made"
                + (f" ({'; '.join(gone)})" if gone else "") + ": free space in the backup directory, then run "
                "promote-weekly (doctorq-backup promote-weekly) or let the next weekly run make one.")

    def finish(self, now: dt.datetime, backup_id: str, path: str, out: dict[str, Any], log: RunLog, *,
               keep_days: dict[str, int | None], prune: bool) -> None:
        """After the commit: catch-up uploads, retention, then fail the run if S3 failed on the way (``out``: the result)."""
        caught_up = self.catch_up(now, keep_days, backup_id, log)
        if caught_up:
            out["caught_up"] = caught_up
        out["deleted"] = self.retention(now, keep_days, log, check_mode=False) if prune else []
        self.raise_for_s3(path, out["backup"]["s3_uri"], backup_id)

    # -- catch-up: sets an earlier run kept on disk only ------------------------
    def pending_uploads(self, now: dt.datetime, keep_days: dict[str, int | None], current_id: str,
                        planned: Sequence[Manifest] = ()) -> list[Manifest]:
        """Complete local dailies that never reached S3 and that S3 retention keeps once they are there.

        Every night S3 was down, the first run's included (S3 need not hold an
        earlier backup), and sets made before S3 was configured. Not a set
        whose manifest says it reached S3 once: S3 lacks it because retention,
        a lifecycle rule or a person deleted it there. Nor one S3 retention
        would delete at once (``min_count`` and the daily window decide, as
        for the sets S3 holds). ``planned``: check mode's sets of this run.
        """
        if not self.s3:
            return []
        remote = self.s3.list(self.name, self.source_type) + [m for m in planned if m.location == "s3"]
        in_s3 = {m.id for m in remote if m.kind == "daily"}
        candidates = [m for m in self.local.list(self.name, self.source_type)
                      if m.kind == "daily" and m.id != current_id and m.id not in in_s3 and not m.s3]
        if not candidates:
            return []
        uploaded = [dataclasses.replace(m, location="s3") for m in candidates]
        doomed = {m.id for m in to_delete(remote + uploaded, now, keep_days, self.min_count) if m.kind == "daily"}
        return [m for m in candidates if m.id not in doomed]

    def s3_lacking(self, now: dt.datetime, keep_days: dict[str, int | None]) -> dict[str, float]:
        """The metric ``s3_pending_uploads``: complete local dailies with no S3 copy that a catch-up would upload.

        From the local manifests alone (after an outage S3 may still be
        down), all of them as S3 would hold them once caught up deciding which
        S3 retention keeps. Empty without S3, or when the directory cannot be
        listed (the run says why elsewhere).
        """
        if not self.s3_where:
            return {}
        try:
            local = [m for m in self.local.list(self.name, self.source_type) if m.kind == "daily"]
        except (StorageError, OSError):
            return {}
        doomed = {m.id for m in to_delete([dataclasses.replace(m, location="s3") for m in local], now, keep_days,
                                          self.min_count)}
        return {"s3_pending_uploads": float(sum(1 for m in local if not m.s3 and m.id not in doomed))}

    def plan(self, now: dt.datetime, keep_days: dict[str, int | None], backup_id: str, name: str, *, weekly: bool,
             prune: bool, log: RunLog) -> tuple[list[str], list[dict[str, str]]]:
        """Check mode: the catch-up uploads and the deletions the run would make, with the backup it would make counted.

        Mirrors the run (commit, weekly copy, catch-up, retention) on the
        stores' listings, so ``would_delete`` is exactly what the run deletes.
        """
        kinds = ["daily"] + (["weekly"] if weekly else [])
        places = ["local"] + (["s3"] if self.s3 else [])
        started = iso(now)
        planned = [Manifest(id=backup_id, name=self.name, kind=kind, started_at=started, finished_at=started,
                            duration_s=0.0, file=name, size=0, sha256="", md5="", compression="", compression_level=0,
                            source_type=self.source_type, location=place, origin="(this run)")
                   for kind in kinds for place in places]
        pending = self.pending_uploads(now, keep_days, backup_id, planned)
        if pending:
            log(f"Would upload {len(pending)} backup(s) an earlier run kept on disk only: {', '.join(m.id for m in pending)}")
            weeklies = {m.id for m in self.local.list(self.name, self.source_type) if m.kind == "weekly" and not m.s3}
            planned += [dataclasses.replace(m, location="s3", kind=kind) for m in pending
                        for kind in ("daily", "weekly") if kind == "daily" or m.id in weeklies]
        would_delete = self.retention(now, keep_days, log, check_mode=True, planned=planned) if prune else []
        return [m.id for m in pending], would_delete

    def catch_up(self, now: dt.datetime, keep_days: dict[str, int | None], current_id: str,
                 log: RunLog) -> list[dict[str, Any]]:
        """Upload the sets earlier runs kept on disk only (S3 was down), newest first; their manifests gain S3 facts."""
        if not self.s3:
            return []
        try:
            pending = self.pending_uploads(now, keep_days, current_id)
        except StorageError as exc:
            self.s3_failed(str(exc), log)
            return []
        self.report_invalid(log)
        if pending:
            log(f"Catching up {len(pending)} backup(s) an earlier run could not upload: {', '.join(m.id for m in pending)}")
        weeklies = {m.id: m for m in self.local.list(self.name, self.source_type) if m.kind == "weekly" and not m.s3}
        done: list[dict[str, Any]] = []
        for manifest in pending:
            try:
                s3_manifest = self._upload_set(manifest)
            except IntegrityError as exc:
                log(f"WARNING: {exc}")
                done.append({"id": manifest.id, "error": str(exc)})
                continue
            except StorageError as exc:
                self.s3_failed(str(exc), log)
                break
            self.local.commit_manifest(dataclasses.replace(manifest, s3=s3_manifest.s3))
            entry = {"id": manifest.id, "s3_uri": s3_manifest.s3["uri"]}
            done.append(entry)
            log(f"Caught up: {manifest.id} uploaded to {entry['s3_uri']}")
            if manifest.id in weeklies:
                try:
                    s3_weekly = self.s3.add_weekly(s3_manifest)
                except StorageError as exc:
                    self.s3_failed(str(exc), log)
                    break
                self.local.commit_manifest(dataclasses.replace(weeklies[manifest.id], s3=s3_weekly.s3))
                entry["weekly_s3_uri"] = s3_weekly.s3["uri"]
        return done

    def _upload_set(self, manifest: Manifest) -> Manifest:
        """Upload one complete local set (data re-hashed on the way against its manifest), manifest last."""
        key = self.s3_key(manifest.started, manifest.file)
        if manifest.is_directory:
            facts = backup_directory.upload(self, manifest, os.path.dirname(manifest.origin))
        else:
            facts = self._facts(pipeline.upload_file(self.local.data_path(manifest), self.data_sink(key, manifest.id),
                                                     manifest.size, manifest.sha256))
        if manifest.globals:
            g = manifest.globals
            pipeline.upload_file(self.local.sibling(manifest, g["file"]),
                                 self.data_sink(posixpath.join(posixpath.dirname(key), g["file"]), manifest.id),
                                 g["size"], g["sha256"])
        return self._commit_s3(dataclasses.replace(manifest, s3=facts))
