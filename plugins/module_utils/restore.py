# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The safe restore (``pg_restore_safe``): verify first, safety copy first, swap last.

Order of a run, and why:
1. find the backup through its manifest (no manifest, no restore);
2. check the confirmation before any slow work, so a typo costs nothing;
3. bring an archived S3 object back (or say when to come back);
4. read every byte once and compare it with the manifest: a damaged backup
   never reaches the database; the pg_restore found must read what the
   backup's pg_dump wrote (restore_client.py);
5. take a safety backup of the current target through the backup engine;
6. ``swap``: restore into a new database, verify it, then rename the target
   away and the new one into place in one transaction, so the target is
   either the old database or the verified new one, never half of each.
   ``replace``: the seed's drop-and-restore, with the safety backup restored
   automatically if anything fails.

The steps live beside it: the backup found and read back verified
(restore_source.py), the frame (restore_run.py), the lock, the leftovers and
the intent of killed runs (restore_interrupted.py), pg_restore and the table
check (restore_load.py), database administration (pg_admin.py) and the
globals (restore_globals.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import socket
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import restore_intent
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier, notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, Manifest, encode_name
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, quote_ident
from ansible_collections.doctorq.backup.plugins.module_utils.pg_admin import (
    allow_connections, apply_extras, close_target, create_database, database_extras, database_names,
    database_settings, drop_database,
)
from ansible_collections.doctorq.backup.plugins.module_utils.restore_client import reader
from ansible_collections.doctorq.backup.plugins.module_utils.restore_directory import (
    data_names, discard, fetch_data, restore_jobs,
)
from ansible_collections.doctorq.backup.plugins.module_utils.restore_globals import restore_globals
from ansible_collections.doctorq.backup.plugins.module_utils.restore_interrupted import DatabaseRestoreRun
from ansible_collections.doctorq.backup.plugins.module_utils.restore_partial import (
    Partial, PartialRestore, partial_argument_spec,
)
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import lock_path
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import (
    DATABASE, ArchiveOptions, Source, archive_argument_spec, check_source, parse_when, safety_argument_spec,
)


def restore_argument_spec() -> dict[str, Any]:
    """Options of the restore besides the connection ones (doc: plugins/modules/pg_restore_safe.py)."""
    return dict(
        source=dict(type="str", default="latest"),
        source_db=dict(type="str"),
        before=dict(type="str"),
        backup_dir=dict(type="path", default="/var/backups/postgresql"),
        confirm=dict(type="str", default=""),
        mode=dict(type="str", default="swap", choices=["swap", "replace"]),
        jobs=dict(type="int"),
        **safety_argument_spec(),
        previous=dict(type="dict", options=dict(
            drop=dict(type="bool", default=False),
            retention_days=dict(type="int", default=0),
        )),
        load=dict(type="dict", options=dict(
            globals=dict(type="bool", default=False),
            no_owner=dict(type="bool", default=False),
            no_privileges=dict(type="bool", default=False),
            row_tolerance=dict(type="float", default=0.1),
        )),
        work_dir=dict(type="path"),
        partial=partial_argument_spec(),
        **archive_argument_spec(),
        **notify_argument_spec(),
    )


@dataclasses.dataclass(frozen=True)
class RestoreJob:
    conn: PgConn
    db: str
    source: str = "latest"
    source_db: str | None = None
    before: dt.datetime | None = None
    backup_dir: str = "/var/backups/postgresql"
    s3: s3util.S3Config | None = None
    confirm: str = ""
    mode: str = "swap"
    jobs: int | None = None  # None: the backup's own for a directory backup (capped by cores), 1 for one file
    safety_backup: bool = True
    safety_dir: str | None = None
    drop_previous: bool = False
    previous_retention_days: int = 0
    restore_globals: bool = False  # the ``load`` option's: globals, no_owner, no_privileges, row_tolerance
    no_owner: bool = False
    no_privileges: bool = False
    row_tolerance: float = 0.1
    archive: ArchiveOptions = ArchiveOptions()
    work_dir: str | None = None
    notifier: Notifier = Notifier()
    partial: Partial | None = None  # some tables/schemas into a new database (restore_partial.py)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "RestoreJob":
        if not params.get("db"):
            raise ConfigError("db is required: name the database to restore into.")
        safety = params.get("safety") or {}
        if params.get("mode") == "replace" and safety.get("backup") is False:
            raise ConfigError("mode=replace drops the target before restoring: it needs safety.backup=true.")
        previous = params.get("previous") or {}
        load = params.get("load") or {}
        for name, value in (("jobs", params.get("jobs")), ("previous.retention_days", previous.get("retention_days"))):
            if (value or 0) < 0:
                raise ConfigError(f"{name} must not be negative.")
        return cls(
            # Server-level work (CREATE/RENAME/DROP DATABASE) runs from the maintenance database: the
            # target may not exist yet.
            conn=dataclasses.replace(PgConn.from_params(params), db=None), db=params["db"],
            source=check_source(params.get("source") or "latest"),
            source_db=params.get("source_db"), before=parse_when(params.get("before")),
            backup_dir=params.get("backup_dir") or "/var/backups/postgresql",
            s3=s3util.S3Config.from_params(params.get("s3")), confirm=params.get("confirm") or "",
            mode=params.get("mode") or "swap", jobs=params.get("jobs"),
            safety_backup=safety.get("backup") is not False, safety_dir=safety.get("dir"),
            drop_previous=bool(previous.get("drop")), previous_retention_days=previous.get("retention_days") or 0,
            restore_globals=bool(load.get("globals")), no_owner=bool(load.get("no_owner")),
            no_privileges=bool(load.get("no_privileges")),
            row_tolerance=load["row_tolerance"] if load.get("row_tolerance") is not None else 0.1,
            archive=ArchiveOptions.from_params(params), work_dir=params.get("work_dir"), notifier=Notifier.from_params(params),
            partial=Partial.from_params(params.get("partial"), params["db"]),
        )


class _Restore(DatabaseRestoreRun):
    """One run of the database restore job, in the order of this module's docstring."""

    job: RestoreJob

    def __init__(self, job: RestoreJob, echo: IO[str] | None) -> None:
        super().__init__(job, echo, DATABASE, {"changed": False, "database": job.db,
                                               "mode": "partial" if job.partial else job.mode})
        self.partial = PartialRestore(self, job.partial) if job.partial else None

    # -- 1. source -----------------------------------------------------------
    def find_source(self, log: RunLog) -> Source:
        return self.sources.find(self.job.source, self.job.source_db or self.job.db, self.job.before, log)

    # -- 2. confirmation ---------------------------------------------------------
    def target_exists(self, pg: PgClient) -> bool:
        return pg.database_exists(self.job.db)

    def check_confirmation(self, exists: bool) -> None:
        if exists and self.job.confirm != self.job.db:
            said = f"confirm={self.job.confirm!r} does not match" if self.job.confirm else "no confirmation was given"
            raise ConfigError(f"restoring into {self.job.db!r} replaces an existing database and {said}: set "
                              f"confirm={self.job.db} (the target database's name) to go ahead. "
                              + ("What an interrupted restore left was put right first (see the log); nothing else "
                                 "was touched." if self.result.get("interrupted_restore") else "Nothing was touched."))

    # -- 3. archive tiers, 4. fetch and verify: self.sources (restore_source.py); 5. safety backup -----
    def take_safety_backup(self, log: RunLog) -> dict[str, Any]:
        def backup(safety_dir: str) -> dict[str, Any]:
            return run_backup(BackupJob(conn=self.job.conn.with_db(self.job.db), db=self.job.db, backup_dir=safety_dir,
                                        policy=JobPolicy(weekly="never", prune=False)))
        return self.safety_backup(repr(self.job.db), backup, log)["backup"]

    # -- 6. restore: swap / replace ----------------------------------------------------------
    def swap(self, pg: PgClient, new: str, target_exists: bool, log: RunLog) -> str | None:
        started = time.monotonic()
        previous = self.derived_name("pre_restore") if target_exists else None
        if not target_exists:
            return self._swap(pg, new, None, log, started)
        # closed to connections until the rename: a run killed in between leaves its intent to the next one
        self.write_intent({"mode": "swap", "phase": "closing", "previous": previous})
        try:
            return self._swap(pg, new, previous, log, started)
        finally:
            restore_intent.remove(self.job.backup_dir, self.job.db)

    def _swap(self, pg: PgClient, new: str, previous: str | None, log: RunLog, started: float) -> str | None:
        target_exists = previous is not None
        if target_exists:
            close_target(pg, self.job.db, log)
        conn = pg.connect("postgres")
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                if previous:
                    cur.execute(f"ALTER DATABASE {quote_ident(self.job.db)} RENAME TO {quote_ident(previous)}")
                cur.execute(f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(self.job.db)}")
            conn.commit()
        except Exception as exc:  # pylint: disable=broad-except
            conn.rollback()
            if target_exists:
                allow_connections(pg, self.job.db)
            raise PgError(f"renaming {new!r} to {self.job.db!r} failed ({pg.explain(str(exc))}); "
                          f"{self.job.db!r} is unchanged.") from None
        finally:
            conn.close()
        if previous:
            allow_connections(pg, previous)
            log(f"Swapped: {self.job.db!r} is the restored database; the previous one is kept as {previous!r}")
        else:
            log(f"Restored database renamed to {self.job.db!r}")
        self.timed("swap", started)
        return previous

    def prune_previous(self, pg: PgClient, log: RunLog) -> list[str]:
        """Drop ``<db>__pre_restore_<stamp>`` databases older than previous.retention_days."""
        if not self.job.previous_retention_days:
            return []
        # the same stem derived_name() gives: "__pre_restore_" + stamp is 29 characters
        stem = self.derived_name("pre_restore")[:-len(f"__pre_restore_{self.stamp}")]
        pattern = re.compile(re.escape(stem) + r"__pre_restore_(\d{8}_\d{6})$")
        cutoff = self.now - dt.timedelta(days=self.job.previous_retention_days)
        dropped = []
        for name in database_names(pg, pattern):
            if dt.datetime.strptime(pattern.match(name).group(1), STAMP).replace(tzinfo=dt.timezone.utc) < cutoff:
                drop_database(pg, name)
                dropped.append(name)
                log(f"Dropped previous database {name!r} (older than {self.job.previous_retention_days} days)")
        return dropped

    # -- the run (RestoreRun.run) ---------------------------------------------------------
    def log_name(self) -> str:
        return f"restore_{encode_name(self.job.db)}_{self.stamp}.log"

    def title(self) -> str:
        if self.partial:
            return f"Partial restore from backups of {self.job.db!r} into {self.partial.target!r}"
        return f"Restore of database {self.job.db!r}"

    def work(self, log: RunLog, check_mode: bool) -> None:
        job = self.job
        if self.partial:  # the live database is not touched: no lock of it, no leftovers or intent of its restores
            source = self.find_source(log)
            self._describe(source)
            self.partial.go(source, log, check_mode)
        elif check_mode:
            self._plan(log)
        else:
            with Lock(lock_path(job.backup_dir, job.db), f"a backup or restore of database {job.db!r}"):
                self._run(log)

    @property
    def target_words(self) -> dict[str, str]:
        """Whose restore it is, in the audit line and the event (``database``: the old key, until 1.0.0)."""
        return {"source_type": "database", "name": self.job.db, "database": self.job.db}

    def audit_record(self) -> dict[str, Any]:
        if self.partial:
            return {**self.target_words, "mode": "partial",
                    "partial": self.result.get("partial") or self.partial.options()}
        return {**self.target_words, "mode": self.job.mode, "previous_database": self.result.get("previous_database")}

    def event(self, status: str, error: str | None) -> dict[str, Any]:
        job = self.job
        what = f"Partial restore ({self.partial.said()}) from backups" if self.partial else "Restore"
        summary = (f"{what} of {job.db} on {socket.gethostname()} from {self.result.get('source', {}).get('id')}: "
                   f"{status}" + (f" ({error})" if error else ""))
        return {"event": "restore", "status": status, **self.target_words, "host": socket.gethostname(),
                "summary": summary, "error": error, "source": self.result.get("source"),
                "duration_s": self.result["duration_s"]}

    def _describe(self, source: Source) -> None:
        m = source.manifest
        self.result["source"] = {"id": m.id, "name": m.name, "source_type": m.source_type, "database": m.name, "kind": m.kind, "location": m.location,
                                 "ref": source.ref, "started_at": m.started_at, "size": m.size,
                                 **({"format": m.format, "files": len(m.dir_files or [])} if m.is_directory else {})}
        self.result["checksums"] = {"sha256": m.sha256, "md5": m.md5, "verified": False}

    def _names(self, source: Source) -> list[str]:
        names = data_names(source.manifest)
        if self.job.restore_globals:
            if not source.manifest.globals:
                raise ConfigError(f"load.globals is set but backup {source.manifest.id} has no globals file "
                                  "(back up with globals: true).")
            names.append(source.manifest.globals["file"])
        return names

    def _plan(self, log: RunLog) -> Source:
        source = self.find_source(log)
        self._describe(source)
        with PgClient(self.job.conn) as pg, self.restore_lock(pg):
            exists = self.target_exists(pg)
            reader(pg, source.manifest)
            leftovers = self.leftovers(pg)
        names = self._names(source)
        state = self.sources.archive_state(source, names, request=False)
        plan: dict[str, Any] = {"target_exists": exists, "confirmation_ok": not exists or self.job.confirm == self.job.db,
                                "archive_state": state, "drop_leftovers": leftovers}
        intent = restore_intent.read(self.job.backup_dir, self.job.db)
        if intent:
            plan["finish_interrupted"] = {k: intent.get(k) for k in ("mode", "phase", "pid", "started_at", "safety_backup")}
        if state == "available":
            fetch_data(self.sources, source, log, keep=False)
            self.result["checksums"]["verified"] = True
        if exists:
            plan["safety_backup"] = self.job.safety_backup
        if self.job.mode == "swap":
            plan["restore_into"] = self.derived_name("restoring")
            if exists:
                plan["rename_target_to"] = self.derived_name("pre_restore")
                plan["drop_previous"] = self.job.drop_previous
        else:
            plan["drop_and_recreate"] = exists
        self.result.update(plan=plan, changed=True)
        log(f"Plan: {json.dumps(plan, sort_keys=True)}")
        return source

    def _run(self, log: RunLog) -> Source:
        job = self.job
        source = self.find_source(log)
        self._describe(source)
        m = source.manifest
        log(f"Backup found: {source.ref} ({m.started_at}, {human(m.size)}, {m.table_count} tables)")
        with PgClient(job.conn) as pg, self.restore_lock(pg):
            self.result["leftovers_removed"] = self.drop_leftovers(pg, log)
            if self.finish_interrupted(pg, log) and self.same_file(source, self.result["interrupted_restore"]["safety_backup"]):
                self.result["checksums"]["verified"] = True
                log("The backup to restore is that safety backup: nothing more to do")
                log.banner("RESTORE COMPLETED SUCCESSFULLY")
                return source
            exists = self.target_exists(pg)
            self.check_confirmation(exists)
            if exists:
                log(f"Confirmation received for {job.db!r}")
            reader(pg, m)
            names = self._names(source)
            if self.sources.wait_for_archive(source, names, log) == "pending":
                return source
            local_path = fetch_data(self.sources, source, log, keep=True)
            self.result["checksums"]["verified"] = True
            globals_path = None
            if job.restore_globals:
                globals_path = self.sources.fetch_verified(source, m.globals["file"], log, keep=True)
            try:
                if exists and job.safety_backup:
                    self.result["safety_backup"] = self.take_safety_backup(log)["path"]
                if globals_path:
                    restore_globals(pg, globals_path, m.compression, log)
                if job.mode == "swap":
                    self._swap_mode(pg, local_path, m, exists, log)
                else:
                    self._replace_mode(pg, local_path, m, exists, log)
                self.result["pruned_previous"] = self.prune_previous(pg, log)
            finally:
                if source.store.remote:  # downloads of the backup, not the backup itself
                    for path in (local_path, globals_path):
                        discard(path)
        log.banner("RESTORE COMPLETED SUCCESSFULLY")
        return source

    @staticmethod
    def same_file(source: Source, path: str) -> bool:
        return not source.store.remote and os.path.realpath(source.ref) == os.path.realpath(path)

    def _swap_mode(self, pg: PgClient, local_path: str, m: Manifest, exists: bool, log: RunLog) -> None:
        new = self.derived_name("restoring")
        log(f"Restoring into a new database {new!r}...")
        create_database(pg, new, database_settings(pg, self.job.db) if exists else None)
        self.result["changed"] = True
        try:
            self.pg_restore(pg, local_path, m.compression, new, log, restore_jobs(self.job.jobs, m))
            self.result["tables"] = self.verify_restored(pg, new, m, log)
            if exists:
                apply_extras(pg, database_extras(pg, self.job.db), new)
            previous = self.swap(pg, new, exists, log)
        except BaseException:
            drop_database(pg, new)
            log(f"Dropped the half-restored database {new!r}; {self.job.db!r} is untouched")
            raise
        self.result["previous_database"] = previous
        if previous and self.job.drop_previous:
            drop_database(pg, previous)
            log(f"Dropped the previous database {previous!r} (previous.drop)")
            self.result["previous_dropped"] = True

    def _replace_mode(self, pg: PgClient, local_path: str, m: Manifest, exists: bool, log: RunLog) -> None:
        settings = database_settings(pg, self.job.db) if exists else None
        extras = database_extras(pg, self.job.db) if exists else []
        safety = self.result.get("safety_backup")
        if exists:
            # what a run killed from here on leaves to the next one: the fall-back to the safety backup
            intent = {"mode": "replace", "phase": "closing", "safety_backup": safety, "settings": settings,
                      "extras": extras}
            if safety:
                self.write_intent(intent)
            close_target(pg, self.job.db, log)
            log(f"Dropping the existing database {self.job.db!r}...")
            pg.query(f"DROP DATABASE {quote_ident(self.job.db)}", db="postgres")
            if safety:
                self.write_intent({**intent, "phase": "dropped"})
        self.result["changed"] = True
        try:
            create_database(pg, self.job.db, settings)
            apply_extras(pg, extras, self.job.db)
            self.pg_restore(pg, local_path, m.compression, self.job.db, log, restore_jobs(self.job.jobs, m))
            self.result["tables"] = self.verify_restored(pg, self.job.db, m, log)
            restore_intent.remove(self.job.backup_dir, self.job.db)
        except DoctorqError as exc:
            if not safety:
                drop_database(pg, self.job.db)
                raise
            log(f"Restore failed ({exc}); restoring the safety backup {safety}...")
            try:
                drop_database(pg, self.job.db)
                create_database(pg, self.job.db, settings)
                apply_extras(pg, extras, self.job.db)
                self.pg_restore(pg, safety, JobPolicy.compression, self.job.db, log)
            except DoctorqError as again:
                raise DoctorqError(f"{exc} Restoring the safety backup {safety} failed too ({again}); {self.job.db!r} "
                                   f"is incomplete: restore {safety} (source={safety}); the next pg_restore_safe run "
                                   f"of {self.job.db!r} tries it again by itself.") from None
            restore_intent.remove(self.job.backup_dir, self.job.db)
            self.result["recovered_from_safety_backup"] = True
            raise DoctorqError(f"{exc} The database {self.job.db!r} was recovered from the safety backup {safety}.") from None


def run_restore(job: RestoreJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """Restore one database. Returns the result; ``failed``/``msg`` on failure, ``pending`` while archived."""
    return _Restore(job, echo).run(check_mode)
