# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The steps every backup job takes, whatever it streams (a database dump, a tar of files).

Stream one artifact to disk and S3 at once, write its checksum files, commit
the manifest (S3 first, local last), copy the set to the weekly store, clean
up crash leftovers, apply retention, and upload the sets an earlier run could
not (catch-up). Each step works on a set's *owner*
(the database, or the file set's name) and *type* (``database``/``files``,
see catalog.TYPES), so one type never touches the other's files even when a
database and a file set share a name and a directory.

S3 is the off-site copy, never a reason to go without a backup: when it
fails (unreachable, refused credentials, bucket missing, an upload cut short)
the run goes on with the local copy, weekly link and local retention, skips
the S3 work that is left, and fails at the end with ``Stores.raise_for_s3``'s
message, which says what is safe where and what to do.

``backup.py`` (databases) and ``files.py`` (file sets) both run their jobs
from these steps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import posixpath
from typing import Any, Callable, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, checksum_line, iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.retention import to_delete
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog, expired_logs
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store, object_tags

LEVELS = {"zstd": (1, 19), "gzip": (1, 9), "none": (0, 0)}


def check_policy(params: dict[str, Any]) -> None:
    """Retention windows and compression level and threads, as pg_backup checks them (before any work)."""
    for name in ("retention_daily_days", "retention_weekly_days"):
        if params.get(name) is not None and params[name] < 0:
            raise ConfigError(f"{name} must be 0 (keep forever) or a number of days.")
    if (params.get("compression_threads") or 0) < 0:
        raise ConfigError(f"compression_threads {params['compression_threads']} is negative: use 0 (one thread per "
                          "core) or the number of threads the compressor may use.")
    if params.get("compression_level") is not None:
        low, high = LEVELS[params.get("compression") or "zstd"]
        if not low <= params["compression_level"] <= high:
            raise ConfigError(f"compression_level {params['compression_level']} is out of range for "
                              f"{params.get('compression')}: use {low} to {high}.")


@dataclasses.dataclass
class Stores:
    """The local store, and the S3 store when configured, of one owner and type.

    ``s3`` becomes None at the first S3 failure of the run (``s3_problem`` says
    why): every later step then works on the local store only.
    """

    local: LocalStore
    s3: S3Store | None
    owner: str
    of_type: str
    s3_problem: str | None = None
    s3_where: str = ""
    _warned: bool = dataclasses.field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.s3_where = self.s3.cfg.where if self.s3 else ""

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
        if not self.s3:
            return
        try:
            self.s3.check_bucket()
        except StorageError as exc:
            raise StorageError(f"{exc} (A real run would still write the local backup, skip S3, and fail at its "
                               "end with this error.)", code=exc.code) from None
        log(f"Bucket {self.s3_where} reachable")

    def open_s3(self, log: RunLog) -> None:
        """Check S3 access before the run; when S3 refuses, the run goes on local-only."""
        if not self.s3:
            return
        try:
            self.s3.check_bucket()
        except StorageError as exc:
            self.s3_failed(str(exc), log)

    def had_s3_copies(self, exclude_id: str) -> bool:
        """Whether an earlier complete set of this owner reached S3 (so catch-up will find this run's)."""
        return any(m.s3 for m in self.local.list(self.owner, self.of_type) if m.kind == "daily" and m.id != exclude_id)

    def raise_for_s3(self, path: str, s3_uri: str | None, backup_id: str) -> None:
        """End of the run: fail it when S3 failed, saying what is safe where and what to do next."""
        if not self.s3_problem:
            return
        if s3_uri:
            raise StorageError(f"{self.s3_problem} The backup itself is complete on disk ({path}) and in S3 "
                               f"({s3_uri}); the S3 work left after the failure (weekly copy, retention or catch-up "
                               "uploads) was skipped, and the next run that reaches S3 does it.")
        if self.had_s3_copies(backup_id):
            then = ("that run uploads its own backup and catches up this one too (every complete local backup made "
                    "since the newest one in S3)")
        else:
            then = (f"that run uploads only its own backup: no earlier backup of {self.owner} is in S3, so this one is "
                    "not caught up and stays on disk only unless you copy it there by hand")
        raise StorageError(f"{self.s3_problem} The local backup {path} is complete and kept (checksum files and "
                           "manifest written; the local weekly copy and retention ran as usual), but it has no copy in "
                           f"{self.s3_where}, and this run's S3 cleanup and retention were skipped. Once S3 works "
                           f"again, run the backup again or let the next scheduled run do it: {then}, and it removes "
                           "anything this run left unfinished in S3.")

    # -- the steps --------------------------------------------------------------
    def clean_leftovers(self, log: RunLog) -> list[str]:
        """Remove partial files, crash remains and unfinished uploads of this owner and type."""
        removed = self.local.leftovers(self.owner, self.of_type)
        for path in removed:
            pipeline.remove_quietly(path)
        if self.s3:
            try:
                stray, uploads = self.s3.leftovers(self.owner, self.of_type)
                self.s3.remove_leftovers(stray, uploads)
            except StorageError as exc:
                self.s3_failed(str(exc), log)
            else:
                removed += [self.s3.cfg.uri(k) for k in stray] + [self.s3.cfg.uri(u["Key"]) + " (unfinished upload)"
                                                                  for u in uploads]
        if removed:
            log(f"Removed {len(removed)} leftover(s) of interrupted runs: {', '.join(os.path.basename(r) for r in removed)}")
        return removed

    def retention(self, now: dt.datetime, keep_days: dict[str, int | None], log: RunLog, *,
                  check_mode: bool) -> list[dict[str, str]]:
        """Delete what the policy no longer keeps; S3 only while S3 works (decisions are per location)."""
        log("Applying retention..." if not check_mode else "Retention (check mode, nothing deleted):")
        manifests = self.local.list(self.owner, self.of_type)
        if self.s3:
            try:
                manifests += self.s3.list(self.owner, self.of_type)
            except StorageError as exc:
                if check_mode:
                    raise
                self.s3_failed(str(exc), log)
        doomed = to_delete(manifests, now, keep_days)
        done = []
        for manifest in doomed:
            if not check_mode:
                if manifest.location == "s3":
                    if not self.s3:
                        continue
                    try:
                        self.s3.delete(manifest)
                    except StorageError as exc:
                        self.s3_failed(str(exc), log)
                        continue
                else:
                    self.local.delete(manifest)
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
        return f"{self.s3.dir_key('daily', self.owner, started.strftime('%Y-%m-%d'))}/{name}"

    def _sink(self, key: str, backup_id: str, *, kind_tag: str = "daily", tolerate_failure: bool = False) -> pipeline.S3Sink:
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
            s3sink = self._sink(self.s3_key(started, name), backup_id, kind_tag=kind_tag, tolerate_failure=True)
            sinks.append(s3sink)
        digest, results = pipeline.run(stages, env, sinks, names=names, accept=accept)
        if s3sink is None:
            return digest, None, self.s3_problem
        if s3sink.error:
            self.s3_failed(str(s3sink.error), log)
            return digest, None, str(s3sink.error)
        return digest, self._facts(results[1]), None

    def new_path(self, name: str) -> str:
        """The local path of this run's artifact, which must not exist yet."""
        path = self.local.path("daily", name)
        if os.path.exists(path):
            raise StorageError(f"{path} exists already (two runs in the same second?): run again in a moment.")
        return path

    def put_checksums(self, name: str, digest: pipeline.Digest, log: RunLog) -> None:
        """``<name>.md5`` and ``<name>.sha256`` on disk, as md5sum/sha256sum write them."""
        self.local.put("daily", name + ".md5", checksum_line(digest.md5, name))
        self.local.put("daily", name + ".sha256", checksum_line(digest.sha256, name))
        log("MD5 and SHA-256 checksum files written")

    def commit(self, manifest: Manifest, log: RunLog, s3_error: str | None, *,
               checksums_written: bool = False) -> tuple[Manifest, Manifest | None, str | None]:
        """Checksum files and manifest: S3 first, local last (the local manifest is the commit point)."""
        if not checksums_written:
            self.put_checksums(manifest.file, pipeline.Digest(manifest.size, manifest.sha256, manifest.md5), log)
        s3_manifest = None
        if self.s3 and not s3_error and manifest.s3:
            try:
                s3_manifest = self._commit_s3(manifest)
                log(f"Uploaded to S3 and verified: {manifest.s3['uri']}")
            except StorageError as exc:
                s3_error = str(exc)
        if s3_error:
            self.s3_failed(s3_error, log)
            manifest = dataclasses.replace(manifest, s3=None)
        local_manifest = self.local.commit_manifest(manifest)
        log(f"Manifest written: {local_manifest.origin}")
        return local_manifest, s3_manifest, s3_error

    def _commit_s3(self, manifest: Manifest) -> Manifest:
        name = manifest.file
        s3_dir = posixpath.dirname(manifest.s3["key"])
        self.s3.put(f"{s3_dir}/{name}.md5", checksum_line(manifest.md5, name), "daily")
        self.s3.put(f"{s3_dir}/{name}.sha256", checksum_line(manifest.sha256, name), "daily")
        return self.s3.commit_manifest(manifest)

    def weekly(self, local_manifest: Manifest, s3_manifest: Manifest | None, log: RunLog) -> dict[str, Any]:
        """Copy a committed daily set into the weekly store (hard links, server-side copy)."""
        s3_weekly = None
        if self.s3 and s3_manifest:
            try:
                s3_weekly = self.s3.add_weekly(s3_manifest)
            except StorageError as exc:
                self.s3_failed(str(exc), log)
        weekly = self.local.add_weekly(local_manifest, s3_weekly.s3 if s3_weekly else None)
        log(f"Weekly copy made: {os.path.dirname(weekly.origin)}" + (f" and {s3_weekly.s3['uri']}" if s3_weekly else ""))
        return {"weekly": True, "weekly_path": self.local.data_path(weekly),
                "weekly_s3_uri": s3_weekly.s3["uri"] if s3_weekly else None}

    def finish(self, now: dt.datetime, backup_id: str, path: str, out: dict[str, Any], log: RunLog, *,
               keep_days: dict[str, int | None], prune: bool) -> None:
        """After the commit: catch-up uploads, retention, then fail the run if S3 failed on the way (``out``: the result)."""
        caught_up = self.catch_up(now, keep_days, backup_id, log)
        if caught_up:
            out["caught_up"] = caught_up
        out["deleted"] = self.retention(now, keep_days, log, check_mode=False) if prune else []
        self.raise_for_s3(path, out["backup"]["s3_uri"], backup_id)

    # -- catch-up: sets an earlier run kept on disk only ------------------------
    def pending_uploads(self, now: dt.datetime, keep_days: dict[str, int | None], current_id: str) -> list[Manifest]:
        """Complete local dailies missing from S3, made since the newest daily in S3, within the daily window.

        Only sets made *since* the newest one in S3: those are the nights S3
        was down. Older local sets (from before S3 was configured, or deleted
        there on purpose) are left alone, and a set S3 retention would delete
        at once is not uploaded.
        """
        if not self.s3:
            return []
        remote = [m for m in self.s3.list(self.owner, self.of_type) if m.kind == "daily"]
        newest = max((m.started_at for m in remote if m.id != current_id), default=None)
        if newest is None:
            return []
        in_s3 = {m.id for m in remote}
        days = keep_days.get("daily")
        oldest = iso(now - dt.timedelta(days=days)) if days else ""
        return [m for m in self.local.list(self.owner, self.of_type)
                if m.kind == "daily" and m.id != current_id and m.id not in in_s3 and m.started_at > newest
                and m.started_at >= oldest]

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
        if pending:
            log(f"Catching up {len(pending)} backup(s) an earlier run could not upload: {', '.join(m.id for m in pending)}")
        weeklies = {m.id: m for m in self.local.list(self.owner, self.of_type) if m.kind == "weekly" and not m.s3}
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
        result = pipeline.upload_file(self.local.data_path(manifest), self._sink(key, manifest.id),
                                      manifest.size, manifest.sha256)
        if manifest.globals:
            g = manifest.globals
            pipeline.upload_file(self.local.sibling(manifest, g["file"]),
                                 self._sink(posixpath.join(posixpath.dirname(key), g["file"]), manifest.id),
                                 g["size"], g["sha256"])
        return self._commit_s3(dataclasses.replace(manifest, s3=self._facts(result)))
