# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file-set backup job (``files_backup``, ``doctorq-backup files``).

GNU tar writes the set (owners as numbers, modes, symlinks, hard links,
xattrs, ACLs, sparse files) straight into the compressor; the same pipeline
as a database dump hashes it once and writes it to disk and S3, with the same
checksum files, manifest (``type: files``), weekly copies, retention, lock,
log, webhook and metrics. A file that changed while tar read it (tar's exit
status 1) is reported by name in the result, the manifest, the log and the
webhook; by default that is a warning (the archive is complete, only that
file may be inconsistent), ``on_change: fail`` makes it a failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy, policy_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, Manifest, backup_id, encode_name, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.backup_steps import Stores
from ansible_collections.doctorq.backup.plugins.module_utils.fileset import (
    PRESETS, TYPE, check_set_name, norm, postgresql_config_paths, under,
)
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import private_dir
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store
from ansible_collections.doctorq.backup.plugins.module_utils.tarstream import (
    changed_files, content_sample, find_tar, parse_index, tar_features, tar_version, tool_env,
)


def files_backup_argument_spec() -> dict[str, Any]:
    """Options of the file-set backup (doc: plugins/modules/files_backup.py)."""
    return dict(
        name=dict(type="str"),
        paths=dict(type="list", elements="path", default=[]),
        preset=dict(type="str", choices=list(PRESETS)),
        pg_config_dir=dict(type="path", default="/etc/postgresql"),
        pg_version=dict(type="str"),
        pg_cluster=dict(type="str", default="main"),
        root=dict(type="path"),
        exclude=dict(type="list", elements="str", default=[]),
        one_file_system=dict(type="bool", default=False),
        on_change=dict(type="str", default="warn", choices=["warn", "fail"]),
        backup_dir=dict(type="path", default="/var/backups/files"),
        **policy_argument_spec(),
    )


@dataclasses.dataclass(frozen=True)
class FilesJob:
    name: str
    paths: tuple[str, ...]
    root: str
    backup_dir: str
    s3: s3util.S3Config | None = None
    exclude: tuple[str, ...] = ()
    one_file_system: bool = False
    on_change: str = "warn"
    policy: JobPolicy = JobPolicy()
    preset: str | None = None
    notes: tuple[str, ...] = ()  # what resolving the preset found worth a warning

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "FilesJob":
        policy = JobPolicy.from_params(params)
        paths = [norm(p) for p in params.get("paths") or []]
        notes: list[str] = []
        preset = params.get("preset")
        if preset == "postgresql_config":
            found, notes = postgresql_config_paths(params.get("pg_config_dir") or "/etc/postgresql",
                                                   params.get("pg_version"), params.get("pg_cluster") or "main")
            paths += [p for p in found if p not in paths]
        if not paths:
            raise ConfigError("nothing to back up: give paths (directories or files) or a preset.")
        name = check_set_name(params.get("name") or (preset if preset else None))
        for path in paths:
            if not os.path.lexists(path):
                raise ConfigError(f"{path} does not exist: fix the paths option (nothing was written).")
        # a path inside another one would be archived twice
        paths = [p for p in dict.fromkeys(paths) if not any(o != p and under(p, o) for o in paths)]
        # one directory (a symlink to one too: tar enters it) is archived relative to itself
        root = norm(params["root"]) if params.get("root") else (
            paths[0] if len(paths) == 1 and os.path.isdir(paths[0]) else "/")
        outside = [p for p in paths if not under(p, root)]
        if outside:
            raise ConfigError(f"{', '.join(outside)} not under root {root}: every path must be inside root.")
        return cls(
            name=name, paths=tuple(dict.fromkeys(paths)), root=root, backup_dir=params.get("backup_dir") or "/var/backups/files",
            s3=s3util.S3Config.from_params(params.get("s3")), exclude=tuple(params.get("exclude") or ()),
            one_file_system=bool(params.get("one_file_system")), on_change=params.get("on_change") or "warn",
            preset=preset, notes=tuple(notes), policy=policy,
        )

    @property
    def members(self) -> list[str]:
        """The paths as tar names them, relative to root (``.`` for root itself)."""
        return ["." if p == self.root else os.path.relpath(p, self.root) for p in self.paths]

    @property
    def extension(self) -> str:
        return ".tar" + self.policy.extension

    def self_excludes(self) -> list[str]:
        """Member names of our own output (backup and log directories) when they lie inside the set."""
        names = []
        for directory in dict.fromkeys(norm(d) for d in (self.backup_dir, self.policy.log_dir) if d):
            for path, member in zip(self.paths, self.members):
                if under(directory, path) and directory != path:
                    rel = os.path.relpath(directory, path)
                    names.append(rel if member == "." else f"{member}/{rel}")
                    if member == ".":
                        names.append(f"./{rel}")
        return names

    def tar_argv(self, tar: str, index_file: str) -> list[str]:
        features = tar_features(tar)
        argv = [tar, "--create", "--file=-", "--format=posix", "--numeric-owner", f"--directory={self.root}",
                "--sparse", "--xattrs", "--warning=file-changed", "--warning=file-removed", "--warning=file-shrank",
                "--verbose", "--verbose", f"--index-file={index_file}", "--full-time", "--quoting-style=escape"]
        if "--acls" in features:
            argv.append("--acls")
        if self.one_file_system:
            argv.append("--one-file-system")
        own = self.self_excludes()
        if own:
            argv += ["--anchored"] + [f"--exclude={n}" for n in own] + ["--no-anchored"]
        argv += [f"--exclude={pattern}" for pattern in self.exclude]
        return argv + ["--"] + self.members


class _FilesRun:
    """One run of a file-set backup."""

    def __init__(self, job: FilesJob, now: dt.datetime | None, echo: IO[str] | None) -> None:
        self.job = job
        self.started = now or utcnow()
        self.id = backup_id(job.name, self.started, "files")
        local = LocalStore(job.backup_dir)
        self.warnings: list[str] = list(job.notes)
        self.stores = Stores(local, S3Store(job.s3) if job.s3 else None, job.name, TYPE,
                             min_count=job.policy.retention_min_count, warnings=self.warnings)
        self.echo = echo

    @property
    def file_name(self) -> str:
        return f"{self.id}{self.job.extension}"

    def plan(self) -> dict[str, Any]:
        log = RunLog(echo=self.echo)
        job = self.job
        log.banner(f"Backup of file set {job.name} - check mode, nothing is written")
        find_tar()
        job.policy.compressor()
        unreadable = [p for p in job.paths if not os.access(p, os.R_OK)]
        if unreadable:
            raise DoctorqError(f"cannot read {', '.join(unreadable)} as uid {os.geteuid()}: run the backup as a user "
                               "who can (root for the server configuration).")
        self.stores.check_access(log)
        path = self.stores.local.path("daily", self.file_name)
        s3_uri = job.s3.uri(self.stores.s3_key(self.started, self.file_name)) if self.stores.s3 else None
        log(f"Would archive {', '.join(job.paths)} (root {job.root}) into {path}" + (f" and upload {s3_uri}" if s3_uri else ""))
        weekly = job.policy.weekly_due(self.started)
        would_upload, would_delete = self.stores.plan(self.started, job.policy.keep_days, self.id, self.file_name,
                                                      weekly=weekly, prune=job.policy.prune, log=log)
        return {"changed": True, "plan": {"name": job.name, "paths": list(job.paths), "root": job.root, "path": path,
                                          "s3_uri": s3_uri, "weekly": weekly, "would_upload": would_upload,
                                          "would_delete": would_delete,
                                          "leftovers": self.stores.local.leftovers(job.name, TYPE)},
                "log": log.lines, "warnings": self.warnings}

    def run(self) -> dict[str, Any]:
        job = self.job
        frame = Frame(title=f"Backup of file set {job.name}", notifier=job.policy.notifier, echo=self.echo,
                      log_path=os.path.join(job.policy.log_dir or job.backup_dir,
                                            f"backup_{encode_name(job.name)}_files_{self.started.strftime(STAMP)}.log"),
                      lock_path=lock_path(job.backup_dir, job.name, "files"),
                      lock_what=f"the backup of file set {job.name!r}", prepare=self.stores.local.ensure_writable,
                      result={"changed": False}, warnings=self.warnings)

        def work(log: RunLog) -> None:
            for note in job.notes:
                log(f"WARNING: {note}")
            self._locked(log, frame.started_at, frame.result)

        def conclude(status: str, error: str | None) -> Conclusion:
            result, duration, host = frame.result, frame.duration, socket.gethostname()
            backup = result.get("backup") or {}
            changed = (backup.get("contents") or {}).get("changed_during_backup") or result.get("changed_during_backup") or []
            if status == "success":
                summary = (f"Backup of file set {job.name} on {host} succeeded: {backup['contents']['count']} entries, "
                           f"{human(backup.get('size', 0))} in {duration:.1f}s"
                           + (f"; {len(changed)} file(s) changed while read" if changed else ""))
            else:
                summary = f"Backup of file set {job.name} on {host} FAILED: {error}"
            metrics = samples(status, duration, self.stores.s3_lacking(self.started, job.policy.keep_days),
                              last_size_bytes=backup.get("size", 0))
            metrics["last_changed_files"] = float(len(changed))
            if status == "success":
                metrics["last_file_count"] = float(backup["contents"]["count"])
            return Conclusion(
                event={"event": "files_backup", "status": status, "name": job.name, "source_type": "file_set",
                       "database": job.name, "file_set": job.name,
                       "host": host, "summary": summary, "duration_s": duration, "backup": backup or None,
                       "changed_during_backup": changed, "error": error, "s3_error": self.stores.s3_problem},
                metrics=metrics, metrics_job="files_backup", metrics_label=job.name)

        return frame.run(work, conclude)

    def _locked(self, log: RunLog, t0: float, out: dict[str, Any]) -> None:
        job, stores = self.job, self.stores
        tar = find_tar()
        compressor = job.policy.compressor()
        stores.open_s3(log)  # S3 refusing goes on local-only: the backup is still made
        out["leftovers_removed"] = stores.clean_leftovers(log)
        name = self.file_name
        path = stores.new_path(name)
        log(f"Archiving {', '.join(job.paths)} (root {job.root})" + (f", excluding {', '.join(job.exclude)}" if job.exclude else ""))
        log(f"File: {path}")
        changed: list[dict[str, str]] = []
        stderr_seen: list[str] = []

        def accept(index: int, status: int, stderr: str) -> bool:
            stderr_seen.append(stderr)
            if index != 0 or status != 1:
                return False  # tar's 2 is fatal; the compressor never fails harmlessly
            changed.extend(changed_files(stderr))
            return job.on_change == "warn"

        tar_started_ns = time.time_ns()
        with stores.until_committed(log):  # a step failing before the commit point leaves nothing of the set
            with private_dir("index", base=job.backup_dir) as tmp:  # a kill -9 leaves it to the next run to reap
                index = os.path.join(tmp, "index")
                try:
                    digest, s3_facts, s3_error = stores.stream(
                        [job.tar_argv(tar, index), compressor], tool_env(), name, self.started, self.id,
                        ["tar"] + ([os.path.basename(compressor[0])] if compressor else []), accept=accept, log=log)
                except pipeline.StageFailed:
                    if changed and job.on_change == "fail":
                        out["changed_during_backup"] = changed
                        raise DoctorqError(f"{len(changed)} file(s) changed while they were read "
                                           f"({', '.join(c['path'] for c in changed[:10])}) and on_change is fail: nothing "
                                           "was kept. Stop what writes them, or set on_change: warn.") from None
                    raise
                counts = parse_index(index)
                sample = content_sample(job.root, index, tar_started_ns)
            if changed:
                warning = (f"{len(changed)} file(s) changed while they were read; the backup is kept, but these may be "
                           f"inconsistent in it: {', '.join(c['path'] + ' (' + c['reason'] + ')' for c in changed[:20])}"
                           + (" ..." if len(changed) > 20 else ""))
                self.warnings.append(warning)
                log(f"WARNING: {warning}")
            log(f"Archive finished: {counts['count']} entries, {counts['files']} files, {human(counts['bytes'])} of file "
                f"data; {human(digest.size)} ({job.policy.compression})")
            fileset = {"root": job.root, "paths": job.members, "sources": list(job.paths), "exclude": list(job.exclude),
                       "preset": job.preset, **counts, "changed_during_backup": changed,
                       "tar_version": tar_version(tar), "sample": sample}
            manifest = Manifest(
                id=self.id, name=job.name, kind="daily", started_at=iso(self.started), finished_at=iso(utcnow()),
                duration_s=round(time.monotonic() - t0, 3), file=name, size=digest.size, sha256=digest.sha256,
                md5=digest.md5, compression=job.policy.compression, compression_level=job.policy.level, format="tar",
                host=socket.gethostname(), s3=s3_facts, source_type=TYPE, contents=fileset)
            local_manifest, s3_manifest, s3_error = stores.commit(manifest, log, s3_error)
        out.update(changed=True, changed_during_backup=changed,
                   backup={**local_manifest.summary(), "path": path, "weekly": False})
        if job.policy.weekly_due(self.started):
            out["backup"].update(stores.weekly(local_manifest, s3_manifest, log))
        stores.finish(self.started, self.id, path, out, log, keep_days=job.policy.keep_days, prune=job.policy.prune)
        log("Backup completed successfully" + (" (with files changed while read)" if changed else ""))


def run_files_backup(job: FilesJob, *, check_mode: bool = False, now: dt.datetime | None = None,
                     echo: IO[str] | None = None) -> dict[str, Any]:
    """Back up one file set. Returns the result; ``failed``/``msg`` are set on failure."""
    run = _FilesRun(job, now, echo)
    return run.plan() if check_mode else run.run()
