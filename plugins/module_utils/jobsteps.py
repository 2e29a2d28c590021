# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The steps every backup job takes, whatever it streams (a database dump, a tar of files).

Stream one artifact to disk and S3 at once, write its checksum files, commit
the manifest (S3 first, local last), copy the set to the weekly store, clean
up crash leftovers and apply retention. Each step works on a set's *owner*
(the database, or the file set's name) and *type* (``database``/``files``,
see catalog.TYPES), so one type never touches the other's files even when a
database and a file set share a name and a directory.

``backup.py`` (databases) and ``files.py`` (file sets) both run their jobs
from these steps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any, Callable, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, checksum_line
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.retention import to_delete
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store, object_tags

LEVELS = {"zstd": (1, 19), "gzip": (1, 9), "none": (0, 0)}


def check_policy(params: dict[str, Any]) -> None:
    """Retention windows and compression level, as pg_backup checks them."""
    for name in ("retention_daily_days", "retention_weekly_days"):
        if params.get(name) is not None and params[name] < 0:
            raise ConfigError(f"{name} must be 0 (keep forever) or a number of days.")
    if params.get("compression_level") is not None:
        low, high = LEVELS[params.get("compression") or "zstd"]
        if not low <= params["compression_level"] <= high:
            raise ConfigError(f"compression_level {params['compression_level']} is out of range for "
                              f"{params.get('compression')}: use {low} to {high}.")


@dataclasses.dataclass
class Stores:
    """The local store, and the S3 store when configured, of one owner and type."""

    local: LocalStore
    s3: S3Store | None
    owner: str
    of_type: str

    def clean_leftovers(self, log: RunLog) -> list[str]:
        """Remove partial files, crash remains and unfinished uploads of this owner and type."""
        removed = self.local.leftovers(self.owner, self.of_type)
        for path in removed:
            pipeline.remove_quietly(path)
        if self.s3:
            stray, uploads = self.s3.leftovers(self.owner, self.of_type)
            self.s3.remove_leftovers(stray, uploads)
            removed += [self.s3.cfg.uri(k) for k in stray] + [self.s3.cfg.uri(u["Key"]) + " (unfinished upload)" for u in uploads]
        if removed:
            log(f"Removed {len(removed)} leftover(s) of interrupted runs: {', '.join(os.path.basename(r) for r in removed)}")
        return removed

    def retention(self, now: dt.datetime, keep_days: dict[str, int | None], log: RunLog, *,
                  check_mode: bool) -> list[dict[str, str]]:
        log("Applying retention..." if not check_mode else "Retention (check mode, nothing deleted):")
        manifests = self.local.list(self.owner, self.of_type) + (self.s3.list(self.owner, self.of_type) if self.s3 else [])
        doomed = to_delete(manifests, now, keep_days)
        for manifest in doomed:
            if not check_mode:
                (self.s3 if manifest.location == "s3" else self.local).delete(manifest)
            log(f"{'Would delete' if check_mode else 'Deleted'} {manifest.kind} backup {manifest.id} ({manifest.location})")
        log("Retention done" + (f": {len(doomed)} backup(s) removed" if doomed and not check_mode else ""))
        return [{"id": m.id, "kind": m.kind, "location": m.location, "origin": m.origin} for m in doomed]

    def s3_key(self, started: dt.datetime, name: str) -> str:
        return f"{self.s3.dir_key('daily', self.owner, started.strftime('%Y-%m-%d'))}/{name}"

    def stream(self, stages: Sequence[Sequence[str] | None], env: dict[str, str], name: str, started: dt.datetime,
               backup_id: str, names: list[str], *, kind_tag: str = "daily",
               accept: Callable[[int, int, str], bool] | None = None) -> tuple[pipeline.Digest, dict[str, Any] | None, str | None]:
        """Stream one artifact to disk and S3; its digest, S3 facts, and the S3 error (the local copy is kept)."""
        sinks: list[Any] = [pipeline.LocalSink(self.local.path("daily", name))]
        s3sink = None
        if self.s3:
            s3sink = pipeline.S3Sink(self.s3.client, self.s3.cfg, self.s3_key(started, name),
                                     tags=object_tags(kind_tag, data=True), metadata={"backup-id": backup_id},
                                     tolerate_failure=True)
            sinks.append(s3sink)
        digest, results = pipeline.run(stages, env, sinks, names=names, accept=accept)
        if s3sink is None:
            return digest, None, None
        if s3sink.error:
            return digest, None, str(s3sink.error)
        return digest, self.s3.location_facts(results[1]["key"]), None

    def commit(self, manifest: Manifest, log: RunLog, s3_error: str | None) -> tuple[Manifest, Manifest | None, str | None]:
        """Checksum files and manifest: S3 first, local last (the local manifest is the commit point)."""
        name = manifest.file
        self.local.put("daily", name + ".md5", checksum_line(manifest.md5, name))
        self.local.put("daily", name + ".sha256", checksum_line(manifest.sha256, name))
        log("MD5 and SHA-256 checksum files written")
        s3_manifest = None
        if self.s3 and not s3_error and manifest.s3:
            try:
                s3_dir = os.path.dirname(manifest.s3["key"])
                self.s3.put(f"{s3_dir}/{name}.md5", checksum_line(manifest.md5, name), "daily")
                self.s3.put(f"{s3_dir}/{name}.sha256", checksum_line(manifest.sha256, name), "daily")
                s3_manifest = self.s3.commit_manifest(manifest)
                log(f"Uploaded to S3 and verified: {manifest.s3['uri']}")
            except StorageError as exc:
                s3_error = str(exc)
        if s3_error:
            manifest = dataclasses.replace(manifest, s3=None)
        local_manifest = self.local.commit_manifest(manifest)
        log(f"Manifest written: {local_manifest.origin}")
        return local_manifest, s3_manifest, s3_error

    def weekly(self, local_manifest: Manifest, s3_manifest: Manifest | None, log: RunLog) -> dict[str, Any]:
        """Copy a committed daily set into the weekly store (hard links, server-side copy)."""
        s3_weekly = self.s3.add_weekly(s3_manifest) if self.s3 and s3_manifest else None
        weekly = self.local.add_weekly(local_manifest, s3_weekly.s3 if s3_weekly else None)
        log(f"Weekly copy made: {os.path.dirname(weekly.origin)}" + (f" and {s3_weekly.s3['uri']}" if s3_weekly else ""))
        return {"weekly": True, "weekly_path": self.local.data_path(weekly),
                "weekly_s3_uri": s3_weekly.s3["uri"] if s3_weekly else None}
