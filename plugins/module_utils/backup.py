# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup job, shared by the ``pg_backup`` module and the scheduled CLI.

One run: lock, clean crash leftovers, dump|compress|hash into the local
directory and S3 at once, write checksum files, write the manifest last,
copy to the weekly set when due, upload what an earlier run could not,
apply retention, notify. When S3 fails (at the start or mid-run) the backup
is still made and kept on disk, and the run fails at its end (backup_steps).
With ``jobs`` other than 1 the dump is pg_dump's directory format, in
parallel, into ``<id>.dir/`` (backup_directory, dirdump).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import socket
import time
from typing import IO, Any, Iterator

from ansible_collections.doctorq.backup.plugins.module_utils import backup_directory, dirdump, pipeline, procs, restore_intent
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    STAMP, Manifest, backup_id, encode_name, iso, utcnow,
)
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.backup_steps import DatabaseBackups, Stores
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy, policy_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, client_major, gave_up_on_a_lock
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.units import human


# pg_dump locks every table it dumps (ACCESS SHARE) before it reads any; behind a session holding a conflicting lock
# (ALTER TABLE, VACUUM FULL, a migration left open) it waits for ever by default, and every later run finds the job's
# lock taken. Seconds it waits instead before the run fails naming the blocker; 0 waits for ever.
LOCK_WAIT_TIMEOUT = 600


def backup_argument_spec() -> dict[str, Any]:
    """Options of the backup job besides the connection ones (doc: plugins/modules/pg_backup.py)."""
    return dict(
        backup_dir=dict(type="path", default="/var/backups/postgresql"),
        globals=dict(type="bool", default=False),
        jobs=dict(type="int", default=1),
        lock_wait_timeout=dict(type="int", default=LOCK_WAIT_TIMEOUT),
        **policy_argument_spec(),
    )


@dataclasses.dataclass(frozen=True)
class BackupJob(DatabaseBackups):
    globals: bool = False
    policy: JobPolicy = JobPolicy()
    jobs: int = 1  # 1: one custom-format stream; 0: pg_dump -Fd with one job per core; N: pg_dump -Fd -j N
    lock_wait_timeout: int = LOCK_WAIT_TIMEOUT

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "BackupJob":
        if not params.get("db"):
            raise ConfigError("db is required: name the database to back up.")
        policy = JobPolicy.from_params(params)
        jobs = params.get("jobs", 1)
        if jobs is None or jobs < 0:
            raise ConfigError(f"jobs is {jobs}: use 1 (one stream, the default), 0 (a directory backup with one "
                              "pg_dump job per core) or the number of pg_dump jobs of a directory backup.")
        lock_wait = params.get("lock_wait_timeout", LOCK_WAIT_TIMEOUT)
        if lock_wait is None or lock_wait < 0:
            raise ConfigError(f"lock_wait_timeout is {lock_wait}: use the seconds pg_dump may wait for a table's lock "
                              f"(default {LOCK_WAIT_TIMEOUT}), or 0 to wait for ever.")
        return cls(
            conn=PgConn.from_params(params), db=params["db"], backup_dir=params["backup_dir"],
            s3=s3util.S3Config.from_params(params.get("s3")), globals=bool(params.get("globals")), jobs=jobs, policy=policy,
            lock_wait_timeout=lock_wait,
        )

    @property
    def directory(self) -> bool:
        """A directory backup (pg_dump -Fd), not one custom-format stream."""
        return self.jobs != 1

    @property
    def dump_jobs(self) -> int:
        return self.jobs or os.cpu_count() or 1

    def data_name(self, backup_id_: str) -> str:
        return f"{backup_id_}.dir" if self.directory else f"{backup_id_}.dump{self.policy.extension}"


class _Run:
    """State of one backup run; the public entry points are the functions below."""

    def __init__(self, job: BackupJob, now: dt.datetime | None, echo: IO[str] | None) -> None:
        self.job = job
        self.started = now or utcnow()
        self.id = backup_id(job.db, self.started)
        self.local = LocalStore(job.backup_dir)
        self.s3 = S3Store(job.s3) if job.s3 else None
        self.warnings: list[str] = []
        self.stores = Stores(self.local, self.s3, job.db, "database", min_count=job.policy.retention_min_count,
                             warnings=self.warnings)
        self.echo = echo

    # -- pieces (the steps every backup job shares live in backup_steps.Stores) ----
    def clean_leftovers(self, log: RunLog) -> list[str]:
        return self.stores.clean_leftovers(log)

    def retention(self, log: RunLog, *, check_mode: bool) -> list[dict[str, str]]:
        if not self.job.policy.prune:
            return []
        return self.stores.retention(self.started, self.job.policy.keep_days, log, check_mode=check_mode)

    @contextlib.contextmanager
    def lock_waits(self, pg: PgClient) -> Iterator[None]:
        """pg_dump giving up on a table's lock (``--lock-wait-timeout``) fails the run naming who holds it."""
        try:
            yield
        except procs.ProcessFailed as exc:
            if not gave_up_on_a_lock(exc.stderr):
                raise
            raise PgError(pg.lock_wait_failure(self.job.db, self.job.lock_wait_timeout)) from None

    def dump_argv(self, pg: PgClient) -> list[str]:
        base = [pg.tool("pg_dump"), "--no-password"]
        if self.job.lock_wait_timeout:
            base.append(f"--lock-wait-timeout={self.job.lock_wait_timeout}s")
        if self.job.directory:  # the directory format's options follow (dirdump.dump_argv)
            return base
        return base + ["--format=custom", "--compress=0"]

    def dir_compress(self, pg_dump: str) -> str | None:
        """pg_dump's --compress of a directory backup, checked against the client tools before any work.

        Not given, its compression is zstd where this pg_dump writes it (16 or
        newer), else gzip: the job's policy says so from here on, so the
        manifest, the log and the globals file name what was used.
        """
        if not self.job.directory:
            return None
        major, policy = client_major(pg_dump), self.job.policy
        chosen = not policy.compression_given and major < dirdump.ZSTD_SINCE
        if chosen:
            self.job = dataclasses.replace(self.job, policy=dataclasses.replace(policy, compression="gzip"))
        try:
            return dirdump.compress_option(self.job.policy.compression, self.job.policy.compression_level, major)
        except ConfigError as exc:
            if not chosen:
                raise
            raise ConfigError(f"{exc} compression is not given, and pg_dump {major} writes directory dumps with gzip "
                              "only (zstd needs the client tools of PostgreSQL 16 or newer, pg_bin_dir).") from None

    def stream(self, argv: list[str], env: dict[str, str], name: str, kind_tag: str,
               names: list[str], log: RunLog) -> tuple[pipeline.Digest, dict[str, Any] | None, str | None]:
        """Stream one artifact to disk and S3; return its digest, S3 facts, S3 error (local is kept)."""
        compressor = self.job.policy.compressor()
        return self.stores.stream([argv, compressor], env, name, self.started, self.id,
                                  names + ([os.path.basename(compressor[0])] if compressor else []), kind_tag=kind_tag,
                                  log=log)

    # -- the job -----------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """Check mode: verify access read-only and say what a run would do."""
        log = RunLog(echo=self.echo)
        log.banner(f"Backup {self.job.db} - check mode, nothing is written")
        with PgClient(self.job.conn) as pg:
            full = pg.server_version()[1]
            if not pg.database_exists(self.job.db):
                raise_missing_db(self.job)
            self.dir_compress(pg.tool("pg_dump"))
            log(f"PostgreSQL {full} reachable at {self.job.conn.where}; database {self.job.db!r} exists")
        self.stores.check_access(log)
        name = self.job.data_name(self.id)
        if self.job.directory:
            log(f"Would dump in pg_dump's directory format with {self.job.dump_jobs} jobs")
        path = self.local.path("daily", name)
        s3_uri = self.job.s3.uri(f"{self.s3.dir_key('daily', self.job.db, self.started.strftime('%Y-%m-%d'))}/{name}") if self.s3 else None
        log(f"Would write {path}" + (f" and upload {s3_uri}" if s3_uri else ""))
        weekly = self.job.policy.weekly_due(self.started)
        if weekly:
            log("Would copy it to the weekly set")
        would_upload, would_delete = self.stores.plan(self.started, self.job.policy.keep_days, self.id, name, weekly=weekly,
                                                      prune=self.job.policy.prune, log=log)
        return {"changed": True, "plan": {"name": self.job.db, "database": self.job.db, "path": path, "s3_uri": s3_uri, "weekly": weekly,
                                          "would_upload": would_upload, "would_delete": would_delete,
                                          "leftovers": self.local.leftovers(self.job.db)},
                "log": log.lines, "warnings": self.warnings}

    def run(self) -> dict[str, Any]:
        job = self.job
        frame = Frame(title=f"Backup {job.db} - kind: full", notifier=job.policy.notifier, echo=self.echo,
                      log_path=os.path.join(job.policy.log_dir or job.backup_dir, f"backup_{encode_name(job.db)}_{self.started.strftime(STAMP)}.log"),
                      lock_path=lock_path(job.backup_dir, job.db), lock_what=f"the backup of database {job.db!r}",
                      prepare=self.local.ensure_writable, result={"changed": False}, warnings=self.warnings)

        def conclude(status: str, error: str | None) -> Conclusion:
            backup = frame.result.get("backup") or {}
            host = socket.gethostname()
            summary = (f"Backup of {job.db} on {host} succeeded: {human(backup.get('size', 0))} in {frame.duration:.1f}s"
                       if status == "success" else f"Backup of {job.db} on {host} FAILED: {error}")
            return Conclusion(
                event={"event": "backup", "status": status, "name": job.db, "source_type": "database", "database": job.db,
                       "host": host, "summary": summary,
                       "duration_s": frame.duration, "backup": backup or None, "error": error,
                       "s3_error": self.stores.s3_problem},
                metrics=samples(status, frame.duration, self.stores.s3_lacking(self.started, job.policy.keep_days),
                                last_size_bytes=backup.get("size", 0)), metrics_job="backup", metrics_label=job.db)

        return frame.run(lambda log: self._locked(log, frame.started_at, frame.result), conclude)

    def _locked(self, log: RunLog, t0: float, out: dict[str, Any]) -> None:
        job, stores = self.job, self.stores
        restore_intent.refuse_backup(job.backup_dir, job.db)  # a killed replace restore left half a database
        with PgClient(job.conn) as pg:
            major, full = pg.server_version()
            log(f"PostgreSQL {full} is reachable at {job.conn.where}")
            if not pg.database_exists(job.db):
                raise_missing_db(job)
            dump_argv = self.dump_argv(pg)
            compress = self.dir_compress(dump_argv[0])  # before any work: zstd needs pg_dump 16
            job = self.job  # with the compression dir_compress chose
            stores.open_s3(log)  # S3 refusing goes on local-only: tonight's backup is still made
            out["leftovers_removed"] = self.clean_leftovers(log)
            name = job.data_name(self.id)
            path = stores.new_path(name)
            log(f"Starting FULL backup of database {job.db!r}...")
            log(f"Host: {job.conn.where}")
            log(f"{'Directory' if job.directory else 'File'}: {path}")
            directory = None
            with pg.snapshot(job.db, job.lock_wait_timeout) as snap, self.lock_waits(pg):
                tables = snap.table_facts()
                if job.directory:
                    directory, s3_facts, s3_error = backup_directory.dump(
                        stores, dump_argv + [f"--snapshot={snap.id}"], pg.env(job.db), name, self.id, self.started,
                        jobs=job.dump_jobs, compress=compress, log=log)
                    digest = pipeline.Digest(directory.size, *backup_directory.checksums(directory))
                else:
                    digest, s3_facts, s3_error = self.stream(dump_argv + [f"--snapshot={snap.id}"], pg.env(job.db),
                                                             name, "daily", ["pg_dump"], log)
            log(f"FULL backup finished: {human(digest.size)} ({job.policy.compression})")
            with stores.until_committed(log):  # a step failing before the commit point leaves nothing of the set
                if directory is None:
                    stores.put_checksums(name, digest, log)
                globals_facts = None
                if job.globals:
                    gname = f"{backup_id(job.db, self.started, 'globals')}.sql{job.policy.extension}"
                    gdigest, _gfacts, gerr = self.stream([pg.tool("pg_dumpall"), "--globals-only", "--no-password"],
                                                         pg.env("postgres"), gname, "daily", ["pg_dumpall"], log)
                    s3_error = s3_error or gerr
                    globals_facts = {"file": gname, "size": gdigest.size, "sha256": gdigest.sha256, "md5": gdigest.md5}
                    log(f"Globals (roles, tablespaces) written: {gname}")
                manifest = Manifest(
                    id=self.id, name=job.db, kind="daily", started_at=iso(self.started),
                    finished_at=iso(utcnow()), duration_s=round(time.monotonic() - t0, 3), file=name,
                    size=digest.size, sha256=digest.sha256, md5=digest.md5, compression=job.policy.compression,
                    compression_level=job.policy.level, server_version=full, server_major=major, pg_dump_version=client_major(dump_argv[0]),
                    host=socket.gethostname(), table_count=len(tables), tables=tables, globals=globals_facts,
                    s3=s3_facts, **({"format": "directory", "jobs": job.dump_jobs,
                                     "dir_files": directory.manifest_files()} if directory else {}))
                local_manifest, s3_manifest, s3_error = stores.commit(manifest, log, s3_error, checksums_written=True)
            out.update(changed=True, backup={**local_manifest.summary(), "path": path, "weekly": False,
                                             "s3_checksum": (local_manifest.s3 or {}).get("checksum")})
            if job.policy.weekly_due(self.started):
                self._weekly(local_manifest, s3_manifest, log, out)
        stores.finish(self.started, self.id, path, out, log, keep_days=job.policy.keep_days, prune=job.policy.prune)
        log("Backup completed successfully")

    def _weekly(self, local_manifest: Manifest, s3_manifest: Manifest | None, log: RunLog, out: dict[str, Any]) -> None:
        out["backup"].update(self.stores.weekly(local_manifest, s3_manifest, log))


def raise_missing_db(job: BackupJob) -> None:
    raise DoctorqError(f"database {job.db!r} does not exist on {job.conn.where}: check the db option "
                       "(list databases with psql -l).")


def promote_weekly(job: BackupJob, *, echo: IO[str] | None = None) -> dict[str, Any]:
    """Keep the newest complete daily backup as a weekly copy, unless it is one already.

    The Sunday 03:00 cron line of the seed's schedule: idempotent, so it does
    nothing when the 02:00 run already made the weekly copy.
    """
    run = _Run(job, None, echo)
    log = RunLog(echo=echo)
    run.local.ensure_writable()  # before any backup ran, say "no backup yet", not "cannot open lock file"
    with Lock(lock_path(job.backup_dir, job.db), f"the backup of database {job.db!r}"):
        dailies = [m for m in run.local.list(job.db) if m.kind == "daily"]
        if not dailies:
            raise DoctorqError(f"no complete daily backup of {job.db!r} in {job.backup_dir} to keep as weekly: "
                               "run a backup first.")
        newest = dailies[0]
        if any(m.kind == "weekly" and m.id == newest.id for m in run.local.list(job.db)):
            log(f"Weekly copy of {newest.id} already present")
            return {"changed": False, "id": newest.id, "log": log.lines}
        s3_weekly = None
        if run.s3:
            s3_daily = next((m for m in run.s3.list(job.db) if m.id == newest.id and m.kind == "daily"), None)
            if s3_daily is None:
                raise DoctorqError(f"{newest.id} has no complete copy in {job.s3.where}: run a backup to upload one.")
            s3_weekly = run.s3.add_weekly(s3_daily)
        weekly = run.local.add_weekly(newest, s3_weekly.s3 if s3_weekly else None)
        log(f"Weekly copy made of {newest.id}: {os.path.dirname(weekly.origin)}" + (f" and {s3_weekly.s3['uri']}" if s3_weekly else ""))
        return {"changed": True, "id": newest.id, "log": log.lines}


def run_backup(job: BackupJob, *, check_mode: bool = False, now: dt.datetime | None = None,
               echo: IO[str] | None = None) -> dict[str, Any]:
    """Back up one database. Returns the result; ``failed``/``msg`` are set on failure."""
    run = _Run(job, now, echo)
    return run.plan() if check_mode else run.run()
