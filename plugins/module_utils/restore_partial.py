# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A partial restore: some tables and/or schemas of a backup into a new database, the live one untouched.

The 3 a.m. request is "give me yesterday's version of this table". Same
ground as a full restore (restore.py): the backup found through its
manifest, its checksums verified before anything else, the run log, the
audit line and the webhook. Then:

1. the backup's table of contents (``pg_restore --list --verbose``, streamed
   through the decompressor) is checked for every table and schema asked
   for: one that is missing is an error naming it and what the backup has,
   before anything is created;
2. ``target_db`` must not exist (an existing one is refused whatever
   ``confirm`` says: a partial restore replaces nothing), and is created;
3. the entries pg_toc.py selects (the tables with their indexes,
   constraints, sequences and so on) are restored with
   ``pg_restore --use-list``; a failure drops ``target_db`` again;
4. the restored tables are checked against the manifest (present, rows
   counted) as a full restore checks all of them.

The live database is neither read nor written, so no safety backup is
taken: the result and the log say so.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import pg_toc, pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient
from ansible_collections.doctorq.backup.plugins.module_utils.pg_admin import (
    MAX_IDENT, create_database, drop_database,
)
from ansible_collections.doctorq.backup.plugins.module_utils.restore_client import reader, unreadable
from ansible_collections.doctorq.backup.plugins.module_utils.restore_load import check_tables, load_dump, stopped_reading
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import Source
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import lock_path
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog


def partial_argument_spec() -> dict[str, Any]:
    """The ``partial`` option of pg_restore_safe (documented there)."""
    return dict(type="dict", options=dict(
        tables=dict(type="list", elements="str", default=[]),
        schemas=dict(type="list", elements="str", default=[]),
        target_db=dict(type="str"),
    ))


@dataclasses.dataclass(frozen=True)
class Partial:
    """Which tables and schemas, into which new database (None: ``<db>__partial_<stamp>``)."""

    tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    target_db: str | None = None

    @classmethod
    def from_params(cls, value: dict[str, Any] | None, db: str) -> "Partial | None":
        if not value:
            return None
        tables = tuple(value.get("tables") or ())
        schemas = tuple(value.get("schemas") or ())
        if not tables and not schemas:
            raise ConfigError("partial needs tables (schema.table, or table in public) and/or schemas to restore.")
        if any(not name.strip() for name in tables + schemas):
            raise ConfigError("partial: an empty table or schema name was given; name each one.")
        target = value.get("target_db")
        if target is not None and (not target or target == db or len(target.encode("utf-8")) > MAX_IDENT):
            raise ConfigError(f"partial.target_db={target!r}: name a new database (not {db!r}, the live one; at most "
                              f"{MAX_IDENT} bytes). A partial restore never writes into an existing database.")
        return cls(tables, schemas, target)

    def describe(self) -> str:
        parts = ([f"table(s) {', '.join(self.tables)}"] if self.tables else []) + (
            [f"schema(s) {', '.join(self.schemas)}"] if self.schemas else [])
        return " and ".join(parts)


def read_toc(pg: PgClient, path: str, compression: str) -> list[pg_toc.Entry]:
    """The backup's table of contents, read through its decompressor (only the archive's head is read)."""
    argv = [pg.tool("pg_restore"), "--list", "--verbose"]
    with open(path, "rb") as inp, tempfile.TemporaryFile() as out:
        try:
            with procs.Pipe([pipeline.decompressor_argv(compression), argv], stdin=inp, stdout=out) as pipe:
                pipe.wait(accept=stopped_reading)
        except procs.ProcessFailed as exc:
            raise PgError(f"reading the table of contents of {path} failed: "
                          f"{unreadable(exc.stderr, argv[0]) or exc}") from None
        out.seek(0)
        return pg_toc.parse(out.read().decode("utf-8", "replace"))


class PartialRestore:
    """The partial path of one restore run (``run``: restore.py's run, with its job, sources, result, durations)."""

    def __init__(self, run: Any, partial: Partial) -> None:
        self.run = run
        self.partial = partial
        self.target = partial.target_db or run.derived_name("partial")

    def said(self) -> str:
        return f"{self.partial.describe()} into {self.target!r}"

    def options(self) -> dict[str, Any]:
        return {"tables": list(self.partial.tables), "schemas": list(self.partial.schemas), "target_db": self.target}

    def go(self, source: Source, log: RunLog, check_mode: bool) -> None:
        run, job, m = self.run, self.run.job, source.manifest
        if m.is_directory:
            raise ConfigError(f"backup {m.id} is a directory backup (pg_dump -Fd): a partial restore reads one-file "
                              "backups only for now; restore it whole into a new database (db: a new name) instead.")
        if job.restore_globals:
            raise ConfigError("load.globals does not go with partial: restore the globals with a full restore.")
        report = run.result["partial"] = {**self.options(), "from_database": m.name, "live_database_touched": False}
        skip = (f"no safety backup: a partial restore creates {self.target!r} and never touches {job.db!r}")
        report["safety_backup"] = "not needed"
        log(f"Partial restore of {self.partial.describe()} from backup {m.id} into the new database {self.target!r}; "
            f"{skip}")
        with PgClient(job.conn) as pg:
            if pg.database_exists(self.target):
                raise ConfigError(f"partial.target_db {self.target!r} exists: a partial restore only creates a new "
                                  f"database. Choose another target_db, or drop {self.target!r} if it is an old one. "
                                  "Nothing was touched.")
            reader(pg, m)
            state = run.sources.archive_state(source, [m.file], request=False) if check_mode else \
                run.sources.wait_for_archive(source, [m.file], log)
            if state == "pending":
                if check_mode:
                    run.result.update(plan={"partial": report, "archive_state": state}, changed=True)
                return
            path = run.sources.fetch_verified(source, m.file, log, keep=True)
            run.result["checksums"]["verified"] = True
            try:
                toc = read_toc(pg, path, m.compression)
                selection, missing = pg_toc.select(toc, list(self.partial.tables), list(self.partial.schemas))
                if missing:
                    raise ConfigError(pg_toc.missing_message(toc, missing, m.id))
                report.update(restored_tables=[f"{s}.{t}" for s, t in selection.tables], skipped=selection.skipped)
                for line in selection.skipped:
                    warning = f"left out of the partial restore: {line}"
                    log(f"WARNING: {warning}")
                    run.warnings.append(warning)
                if check_mode:
                    plan = {"partial": report, "archive_state": state, "create": self.target,
                            "entries": len(selection.ids)}
                    run.result.update(plan=plan, changed=True)
                    log(f"Plan: restore {len(selection.ids)} entries of the backup into {self.target!r}")
                    return
                with Lock(lock_path(job.backup_dir, self.target), f"a partial restore into {self.target!r}"):
                    self._restore(pg, path, m, toc, selection, log)
            finally:
                if source.store.remote:  # the download, not the backup itself
                    pipeline.remove_quietly(path)
        log.banner("PARTIAL RESTORE COMPLETED SUCCESSFULLY")

    def _restore(self, pg: PgClient, path: str, m: Manifest, toc: list[pg_toc.Entry], selection: pg_toc.Selection,
                 log: RunLog) -> None:
        run, job = self.run, self.run.job
        create_database(pg, self.target, None)
        run.result["changed"] = True
        log(f"Created {self.target!r}; restoring {len(selection.ids)} entries of the backup into it...")
        list_path = os.path.join(run.work_dir(), f".{os.path.basename(path)}.{run.stamp}.list")
        try:
            pipeline.write_file_atomic(list_path, pg_toc.use_list(toc, selection).encode("utf-8"))
            load_dump(pg, path, m.compression, self.target, log, jobs=1 if job.jobs is None else job.jobs, no_owner=job.no_owner,
                      no_privileges=job.no_privileges, work_dir=run.work_dir, durations=run.durations,
                      use_list=list_path)
            wanted = set(selection.tables)
            subset = [t for t in m.tables if (t["schema"], t["name"]) in wanted]
            checked = dataclasses.replace(m, tables=subset, table_count=len(subset))
            run.result["tables"] = check_tables(pg, self.target, checked, log, row_tolerance=job.row_tolerance,
                                                durations=run.durations)
            run.result["partial"]["rows"] = {f"{t['schema']}.{t['name']}": t["rows"] if t.get("rows") is not None else t.get("rows_estimate")
                                             for t in subset}
        except BaseException:
            drop_database(pg, self.target)
            log(f"Dropped the half-restored {self.target!r}; {job.db!r} was never touched")
            raise
        finally:
            pipeline.remove_quietly(list_path)
        log(f"{self.target!r} holds {', '.join(f'{k} ({v} rows)' for k, v in run.result['partial']['rows'].items())}")
