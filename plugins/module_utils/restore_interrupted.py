# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A database restore that a ``kill -9`` cannot leave half done: what the next run finds and puts right.

``DatabaseRestoreRun`` is the ground the restore job (restore.py) stands on:

- the server-side restore lock of a target name, held by a session of its
  own for the whole run, so a ``<db>__restoring_<stamp>`` database seen
  while holding it is a dead run's (``leftovers``), whatever host or
  backup_dir that run had, and is dropped (``drop_leftovers``);
- the intent a run writes before a step a kill would leave half done
  (restore_intent.py), and finishing a dead run's intent: connections
  allowed again where it had replaced nothing, or its safety backup restored
  where it had dropped the database (``finish_interrupted``);
- loading a dump and checking its tables (restore_load.py) with the job's
  options, which the job and that fall-back share.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

from ansible_collections.doctorq.backup.plugins.module_utils import restore_intent
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, LockBusy, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient
from ansible_collections.doctorq.backup.plugins.module_utils.pg_admin import (
    allow_connections, apply_extras, close_target, create_database, database_names, derived_db_name, drop_database,
    rename_database, reopen,
)
from ansible_collections.doctorq.backup.plugins.module_utils.restore_load import check_tables, load_dump
from ansible_collections.doctorq.backup.plugins.module_utils.restore_run import RestoreRun
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.units import human


class DatabaseRestoreRun(RestoreRun):
    """A restore of one database (``job.db``): its names, its lock, the leftovers and intent of dead runs.

    The job needs, besides what ``RestoreRun`` needs, ``conn``, ``db``,
    ``confirm``, ``jobs``, ``no_owner``, ``no_privileges`` and ``row_tolerance``.
    """

    def derived_name(self, kind: str) -> str:
        """``<db>__<kind>_<stamp>``, within PostgreSQL's 63 bytes."""
        return derived_db_name(self.job.db, f"__{kind}_{self.stamp}")

    def work_dir(self) -> str:
        return self.sources.work_dir()

    # -- loading, with the job's options ----------------------------------------------------
    def pg_restore(self, pg: PgClient, local_path: str, compression: str, dbname: str, log: RunLog,
                   jobs: int | None = None) -> None:
        """``jobs``: pg_restore's (``restore_directory.restore_jobs``); by default the job's, one when it has none."""
        jobs = jobs if jobs is not None else self.job.jobs if self.job.jobs is not None else 1
        load_dump(pg, local_path, compression, dbname, log, jobs=jobs, no_owner=self.job.no_owner,
                  no_privileges=self.job.no_privileges, work_dir=self.work_dir, durations=self.durations)

    def verify_restored(self, pg: PgClient, dbname: str, manifest: Manifest, log: RunLog) -> dict[str, Any]:
        return check_tables(pg, dbname, manifest, log, row_tolerance=self.job.row_tolerance, durations=self.durations)

    # -- what dead runs left (issue 11, case 6) ----------------------------------------------
    def restoring_stem(self) -> str:
        """What every ``<db>__restoring_<stamp>`` of this target starts with (a long name is cut)."""
        return self.derived_name("restoring")[:-len(f"__restoring_{self.stamp}")]

    @contextlib.contextmanager
    def restore_lock(self, pg: PgClient) -> Iterator[None]:
        """The server-side lock of restores into this name, held for the whole run by a session of its own.

        The server ends that session when the run dies, however it dies, so a
        ``<db>__restoring_<stamp>`` database while this run holds the lock is a
        dead run's, whatever host or backup_dir it ran with.
        """
        with pg.session_lock("doctorq.backup restore " + self.restoring_stem()) as holder:
            if holder is not None:
                raise LockBusy(f"another restore of database {self.job.db!r} is running on {self.job.conn.where} "
                               f"(its PostgreSQL session: pid {holder['pid']}, from {holder['client']}, since "
                               f"{holder['since']}); wait for it to finish. This run changed nothing.")
            yield

    def leftovers(self, pg: PgClient) -> list[str]:
        """The ``<db>__restoring_<stamp>`` databases: with the restore lock held, those of dead runs."""
        return database_names(pg, re.compile(re.escape(self.restoring_stem()) + r"__restoring_\d{8}_\d{6}$"))

    def drop_leftovers(self, pg: PgClient, log: RunLog) -> list[str]:
        """Drop the full-size databases dead runs left (``leftovers``), saying so."""
        dropped = []
        for name in self.leftovers(pg):
            try:
                size = human(pg.query("SELECT pg_database_size(%s)", (name,), db="postgres")[0][0])
            except PgError:
                size = "size unknown"
            drop_database(pg, name)
            dropped.append(name)
            log(f"Dropped {name!r} ({size}), left behind by an interrupted restore: no run holds the restore lock "
                f"of {self.job.db!r}")
        return dropped

    # -- the intent ---------------------------------------------------------------------------
    def write_intent(self, record: dict[str, Any]) -> None:
        restore_intent.write(self.job.backup_dir, self.job.db, {
            "started_at": iso(self.now), "log_file": self.result.get("log_file"),
            "source": (self.result.get("source") or {}).get("ref"), **record})

    def finish_interrupted(self, pg: PgClient, log: RunLog) -> bool:
        """Finish what the intent of a dead run promised; True when that meant restoring its safety backup.

        This run holds the database's lock in backup_dir, which the intent's
        writer held while it lived: an intent found here is a dead run's.
        """
        job = self.job
        intent = restore_intent.read(job.backup_dir, job.db)
        if intent is None:
            return False
        report = {k: intent.get(k) for k in ("mode", "phase", "pid", "host", "started_at", "log_file", "source",
                                             "safety_backup")}
        self.result["interrupted_restore"] = report
        log(f"An interrupted restore left its intent ({intent['file']}): {restore_intent.who(intent)} did not finish")
        fell_back = intent["mode"] == "replace" and not (intent.get("phase") == "closing" and pg.database_exists(job.db))
        if fell_back:
            self._fall_back(pg, intent, report, log)
        else:  # it had not dropped or renamed anything yet: only connections may be closed
            report["reopened"] = [name for name in (job.db, intent.get("previous")) if name and reopen(pg, name)]
            log(f"It had replaced nothing; connections allowed again to: {', '.join(map(repr, report['reopened'])) or 'none needed'}")
        restore_intent.remove(job.backup_dir, job.db)
        self.result["changed"] = True
        return fell_back

    def _fall_back(self, pg: PgClient, intent: dict[str, Any], report: dict[str, Any], log: RunLog) -> None:
        """A replace restore killed after its drop: its safety backup back into the database, as it promised."""
        db, safety, who = self.job.db, intent.get("safety_backup"), restore_intent.who(intent)
        if not safety:
            raise DoctorqError(f"{who} was interrupted after it dropped {db!r} and recorded no safety backup: restore "
                               f"{db!r} from a backup (pg_backup_info lists them), then remove {intent['file']}.")
        try:
            if pg.database_exists(db):
                if self.job.confirm != db:
                    raise ConfigError(f"{who} was interrupted after it dropped {db!r}, and left half a restore under its "
                                      f"name: set confirm={db} to set that aside and restore the safety backup {safety} "
                                      f"(what {db!r} held before). Nothing was touched.")
                aside = self.derived_name("interrupted")
                close_target(pg, db, log)
                rename_database(pg, db, aside)
                allow_connections(pg, aside)
                report["set_aside"] = aside
                log(f"The half-restored {db!r} it left is kept as {aside!r}: drop it once you no longer need it")
            log(f"Finishing the fall-back of the interrupted restore: restoring the safety backup {safety} into {db!r}...")
            source = self.sources.find(safety, None, None, log)
            path = self.sources.fetch_verified(source, source.manifest.file, log, keep=True)
            create_database(pg, db, tuple(intent["settings"]) if intent.get("settings") else None)
            self.result["changed"] = True
            try:
                apply_extras(pg, list(intent.get("extras") or []), db)
                self.pg_restore(pg, path, source.manifest.compression, db, log)
                report["tables"] = self.verify_restored(pg, db, source.manifest, log)
            except BaseException:
                drop_database(pg, db)
                raise
        except ConfigError:
            raise
        except DoctorqError as exc:
            raise DoctorqError(f"finishing the fall-back of {who} failed: {exc} {db!r} is still missing; what it held "
                               f"before is in the safety backup {safety}. Fix the cause and run again ({intent['file']} "
                               "stays until the fall-back is done; to restore another backup instead, remove it "
                               "first).") from None
        log(f"{db!r} is back as it was before the interrupted restore (the safety backup {safety})")
