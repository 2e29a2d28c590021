# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The safe restore (``pg_restore_safe``): verify first, safety copy first, swap last.

Order of a run, and why:
1. find the backup through its manifest (no manifest, no restore);
2. check the confirmation before any slow work, so a typo costs nothing;
3. bring an archived S3 object back (or say when to come back);
4. read every byte once and compare it with the manifest: a damaged backup
   never reaches the database;
5. take a safety backup of the current target through the backup engine;
6. ``swap``: restore into a new database, verify it, then rename the target
   away and the new one into place in one transaction, so the target is
   either the old database or the verified new one, never half of each.
   ``replace``: the seed's drop-and-restore, with the safety backup restored
   automatically if anything fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import socket
import time
from typing import IO, Any, Iterator

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline, procs, restore_intent
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier, notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, Manifest, encode_name, iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import (
    ConfigError, DoctorqError, IntegrityError, LockBusy, PgError,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, quote_ident
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import lock_path
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.restore_run import RestoreRun
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import (
    DATABASE, ArchiveOptions, Source, archive_argument_spec, check_source, parse_when,
)

MAX_IDENT = 63


def derived_db_name(db: str, suffix: str) -> str:
    """``<db><suffix>`` within PostgreSQL's 63 *bytes*, ``db`` cut between characters.

    A longer name is silently shortened by the server, so the database
    created would not be the one every later statement names (``clínica``
    and any non-ASCII name count two or more bytes per letter).
    """
    room = MAX_IDENT - len(suffix.encode("utf-8"))
    return db.encode("utf-8")[:room].decode("utf-8", errors="ignore") + suffix


def restore_argument_spec() -> dict[str, Any]:
    """Options of the restore besides the connection ones (doc: plugins/modules/pg_restore_safe.py)."""
    return dict(
        source=dict(type="str", default="latest"),
        source_db=dict(type="str"),
        before=dict(type="str"),
        backup_dir=dict(type="path", default="/var/backups/postgresql"),
        confirm=dict(type="str", default=""),
        mode=dict(type="str", default="swap", choices=["swap", "replace"]),
        jobs=dict(type="int", default=1),
        safety_backup=dict(type="bool", default=True),
        safety_dir=dict(type="path"),
        drop_previous=dict(type="bool", default=False),
        previous_retention_days=dict(type="int", default=0),
        restore_globals=dict(type="bool", default=False),
        no_owner=dict(type="bool", default=False),
        no_privileges=dict(type="bool", default=False),
        row_tolerance=dict(type="float", default=0.1),
        work_dir=dict(type="path"),
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
    jobs: int = 1
    safety_backup: bool = True
    safety_dir: str | None = None
    drop_previous: bool = False
    previous_retention_days: int = 0
    restore_globals: bool = False
    no_owner: bool = False
    no_privileges: bool = False
    row_tolerance: float = 0.1
    archive: ArchiveOptions = ArchiveOptions()
    work_dir: str | None = None
    notifier: Notifier = Notifier()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "RestoreJob":
        if not params.get("db"):
            raise ConfigError("db is required: name the database to restore into.")
        if params.get("mode") == "replace" and params.get("safety_backup") is False:
            raise ConfigError("mode=replace drops the target before restoring: it needs safety_backup=true.")
        for name in ("jobs", "previous_retention_days"):
            if (params.get(name) or 0) < 0:
                raise ConfigError(f"{name} must not be negative.")
        return cls(
            # Server-level work (CREATE/RENAME/DROP DATABASE) runs from the maintenance database: the
            # target may not exist yet.
            conn=dataclasses.replace(PgConn.from_params(params), db=None), db=params["db"],
            source=check_source(params.get("source") or "latest"),
            source_db=params.get("source_db"), before=parse_when(params.get("before")),
            backup_dir=params.get("backup_dir") or "/var/backups/postgresql",
            s3=s3util.S3Config.from_params(params.get("s3")), confirm=params.get("confirm") or "",
            mode=params.get("mode") or "swap", jobs=params.get("jobs") if params.get("jobs") is not None else 1,
            safety_backup=params.get("safety_backup", True), safety_dir=params.get("safety_dir"),
            drop_previous=bool(params.get("drop_previous")),
            previous_retention_days=params.get("previous_retention_days") or 0,
            restore_globals=bool(params.get("restore_globals")), no_owner=bool(params.get("no_owner")),
            no_privileges=bool(params.get("no_privileges")),
            row_tolerance=params.get("row_tolerance", 0.1) if params.get("row_tolerance") is not None else 0.1,
            archive=ArchiveOptions.from_params(params), work_dir=params.get("work_dir"), notifier=Notifier.from_params(params),
        )


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# Settings whose value is a list written with identifier quoting (pg_dump's variable_is_guc_list_quote).
GUC_LISTS = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                       "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))


def guc_value(name: str, value: str) -> str:
    """A stored ``pg_db_role_setting`` value as SQL for ``SET name TO ...``: every element a literal."""
    if name.lower() not in GUC_LISTS or not value:
        return sql_literal(value)
    return ", ".join(sql_literal(element) for element in split_guc_list(value))


def split_guc_list(value: str) -> list[str]:
    """``"$user", public`` -> ``['$user', 'public']`` (the server writes list elements as identifiers)."""
    elements, i = [], 0
    while i < len(value):
        while i < len(value) and value[i] in " ,":
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            j, word = i + 1, []
            while j < len(value):
                if value[j] == '"':
                    if value[j + 1:j + 2] == '"':
                        word.append('"')
                        j += 2
                        continue
                    break
                word.append(value[j])
                j += 1
            elements.append("".join(word))
            i = j + 1
        else:
            j = value.find(",", i)
            j = len(value) if j < 0 else j
            elements.append(value[i:j].strip())
            i = j
    return elements


def conninfo_db(name: str) -> str:
    """A conninfo naming only the database: a name with ``=`` in it cannot become options."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


# pg_dumpall's CREATE of a role or a tablespace: one line, the name as fmtId writes it
_CREATE_GLOBAL = re.compile(rb'^CREATE (ROLE|TABLESPACE) ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)(?:;$| OWNER )')


def skip_existing(script: bytes, roles: set[str], tablespaces: set[str]) -> tuple[bytes, int]:
    """pg_dumpall's globals without the CREATE of the roles and tablespaces that exist; and how many were left out."""
    out, skipped = [], 0
    for line in script.splitlines(keepends=True):
        match = _CREATE_GLOBAL.match(line.rstrip(b"\r\n"))
        if match:
            name = match.group(2).decode("utf-8", "replace")
            if name.startswith('"'):
                name = name[1:-1].replace('""', '"')
            if name in (roles if match.group(1) == b"ROLE" else tablespaces):
                skipped += 1
                continue
        out.append(line)
    return b"".join(out), skipped


class _Restore(RestoreRun):
    job: RestoreJob

    def __init__(self, job: RestoreJob, echo: IO[str] | None) -> None:
        super().__init__(job, echo, DATABASE, {"changed": False, "database": job.db, "mode": job.mode})

    # -- helpers -----------------------------------------------------------
    def derived_name(self, kind: str) -> str:
        return derived_db_name(self.job.db, f"__{kind}_{self.stamp}")

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

    # -- 3. archive tiers, 4. fetch and verify: self.sources (restore_source.py) -----------------
    def work_dir(self) -> str:
        return self.sources.work_dir()

    # -- 6. restore -----------------------------------------------------------------
    @staticmethod
    def db_settings(pg: PgClient, name: str) -> tuple | None:
        """Owner, encoding and locale of a database, to create its successor alike."""
        rows = pg.query("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
                        "FROM pg_database WHERE datname = %s", (name,), db="postgres")
        return rows[0] if rows else None

    @staticmethod
    def create_database(pg: PgClient, name: str, settings: tuple | None) -> None:
        options = "TEMPLATE template0"
        if settings:
            owner, encoding, collate, ctype = settings
            options += (f" OWNER {quote_ident(owner)} ENCODING {sql_literal(encoding)}"
                        f" LC_COLLATE {sql_literal(collate)} LC_CTYPE {sql_literal(ctype)}")
        pg.query(f"CREATE DATABASE {quote_ident(name)} {options}", db="postgres")

    @staticmethod
    def database_extras(pg: PgClient, name: str) -> list[tuple[str, str]]:
        """What a database carries outside its dump, as (head, tail) of statements around a successor's name.

        Database-level privileges (GRANT ... ON DATABASE) and settings (ALTER
        DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET), written back the
        way pg_dumpall does.
        """
        extras = []
        rows = pg.query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
            "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", (name,), db="postgres")
        for grantee, privilege in rows:
            who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
            extras.append((f"GRANT {privilege} ON DATABASE ", f" TO {who}"))
        rows = pg.query("SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, "
                        "unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                        "WHERE d.datname = %s ORDER BY 1 NULLS FIRST", (name,), db="postgres")
        for role, item in rows:
            setting, _sep, value = item.partition("=")
            target = f"ROLE {quote_ident(role)} IN DATABASE" if role else "DATABASE"
            extras.append((f"ALTER {target} ", f" SET {quote_ident(setting)} TO {guc_value(setting, value)}"))
        return extras

    @staticmethod
    def apply_extras(pg: PgClient, extras: list[tuple[str, str]], name: str) -> None:
        for head, tail in extras:
            pg.query(head + quote_ident(name) + tail, db="postgres")

    def pg_restore(self, pg: PgClient, local_path: str, compression: str, dbname: str, log: RunLog) -> None:
        started = time.monotonic()
        argv = [pg.tool("pg_restore"), "--exit-on-error", "--no-password", f"--dbname={conninfo_db(dbname)}"]
        if self.job.no_owner:
            argv.append("--no-owner")
        if self.job.no_privileges:
            argv.append("--no-privileges")
        jobs = self.job.jobs or os.cpu_count() or 1
        decompress = pipeline.decompressor_argv(compression)
        env = pg.env(dbname)
        try:
            if jobs > 1:
                # Parallel restore needs a seekable archive: decompress it once to the work dir.
                plain = local_path
                if decompress:
                    plain = os.path.join(self.work_dir(), f".{os.path.basename(local_path)}.plain")
                    try:
                        with open(plain, "wb") as out, open(local_path, "rb") as inp:
                            procs.run(decompress, stdin=inp, stdout=out)
                    except BaseException:
                        pipeline.remove_quietly(plain)
                        raise
                try:
                    procs.run(argv + [f"--jobs={jobs}", plain], env=env)
                finally:
                    if plain != local_path:
                        pipeline.remove_quietly(plain)
            else:
                with open(local_path, "rb") as inp, open(os.devnull, "wb") as out, \
                        procs.Pipe([decompress, argv], stdin=inp, stdout=out, env=env) as pipe:
                    pipe.wait()
        except procs.ProcessFailed as exc:
            if exc.name == "pg_restore":
                raise PgError(f"pg_restore into {dbname!r} failed: {pg.explain(exc.stderr[-1500:] or str(exc))}") from None
            raise PgError(f"decompressing {local_path} for the restore into {dbname!r} failed: {exc}") from None
        self.timed("restore", started)
        log(f"pg_restore into {dbname!r} finished in {time.monotonic() - started:.1f}s ({jobs} job(s))")

    def verify_restored(self, pg: PgClient, dbname: str, manifest: Manifest, log: RunLog) -> dict[str, Any]:
        """Every table of the manifest is there; exact row counts match; estimates within tolerance."""
        started = time.monotonic()
        facts = {f"{t['schema']}.{t['name']}": t for t in pg.table_facts(dbname)}
        expected = {f"{t['schema']}.{t['name']}": t for t in manifest.tables}
        missing = sorted(set(expected) - set(facts))
        mismatched = []
        big = [t for name, t in expected.items() if name in facts and t.get("rows") is None]
        if big:  # by schema and name: either may hold a '.'
            pg.query("ANALYZE " + ", ".join(quote_ident(t["schema"]) + "." + quote_ident(t["name"]) for t in big),
                     db=dbname)
            estimates = {f"{s}.{n}": int(r) for s, n, r in pg.query(
                "SELECT n.nspname, c.relname, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')", db=dbname)}
        for name, want in sorted(expected.items()):
            got = facts.get(name)
            if got is None:
                continue
            if want.get("rows") is not None:
                rows = got["rows"] if got["rows"] is not None else pg.query(
                    f"SELECT count(*) FROM {quote_ident(want['schema'])}.{quote_ident(want['name'])}", db=dbname)[0][0]
                if rows != want["rows"]:
                    mismatched.append(f"{name}: {rows} rows, the backup had {want['rows']}")
            elif want.get("rows_estimate"):
                est = estimates.get(name, 0)
                if abs(est - want["rows_estimate"]) > max(1000, self.job.row_tolerance * want["rows_estimate"]):
                    mismatched.append(f"{name}: about {est} rows, the backup's estimate was {want['rows_estimate']}")
        report = {"expected": len(expected), "found": len(facts), "missing": missing, "mismatched": mismatched,
                  "exact": sum(1 for t in expected.values() if t.get("rows") is not None)}
        self.timed("verify_after", started)
        if missing or mismatched or len(facts) != len(expected):
            raise IntegrityError(f"the restored database {dbname!r} does not match the backup: "
                                 f"{len(facts)} tables for {len(expected)} expected; missing {missing[:10]}; "
                                 f"mismatched {mismatched[:10]}.")
        log(f"Tables found: {len(facts)}; every table of the backup is present, row counts match "
            f"({report['exact']} exact, {len(expected) - report['exact']} estimated)")
        return report

    # -- swap / replace -----------------------------------------------------------------
    def close_target(self, pg: PgClient, name: str, log: RunLog) -> int:
        """Block new connections to ``name`` and end the open ones; returns how many were ended."""
        pg.query(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS false", db="postgres")
        ended = 0
        for _attempt in range(50):
            rows = pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (name,), db="postgres")
            ended += len(rows)
            if not pg.query("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,), db="postgres"):
                break
            time.sleep(0.1)
        else:
            pg.query(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS true", db="postgres")
            raise PgError(f"sessions on {name!r} did not end within 5 s; nothing was renamed. Try again.")
        log(f"Active connections terminated on {name!r}: {ended}")
        return ended

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
            self.close_target(pg, self.job.db, log)
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
                pg.query(f"ALTER DATABASE {quote_ident(self.job.db)} WITH ALLOW_CONNECTIONS true", db="postgres")
            raise PgError(f"renaming {new!r} to {self.job.db!r} failed ({pg.explain(str(exc))}); "
                          f"{self.job.db!r} is unchanged.") from None
        finally:
            conn.close()
        if previous:
            pg.query(f"ALTER DATABASE {quote_ident(previous)} WITH ALLOW_CONNECTIONS true", db="postgres")
            log(f"Swapped: {self.job.db!r} is the restored database; the previous one is kept as {previous!r}")
        else:
            log(f"Restored database renamed to {self.job.db!r}")
        self.timed("swap", started)
        return previous

    def drop(self, pg: PgClient, name: str) -> None:
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,), db="postgres")
        pg.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}", db="postgres")

    def prune_previous(self, pg: PgClient, log: RunLog) -> list[str]:
        """Drop ``<db>__pre_restore_<stamp>`` databases older than previous_retention_days."""
        if not self.job.previous_retention_days:
            return []
        # the same stem derived_name() gives: "__pre_restore_" + stamp is 29 characters
        stem = self.derived_name("pre_restore")[:-len(f"__pre_restore_{self.stamp}")]
        pattern = re.compile(re.escape(stem) + r"__pre_restore_(\d{8}_\d{6})$")
        cutoff = self.now - dt.timedelta(days=self.job.previous_retention_days)
        dropped = []
        for (name,) in pg.query("SELECT datname FROM pg_database", db="postgres"):
            match = pattern.match(name)
            if match and dt.datetime.strptime(match.group(1), STAMP).replace(tzinfo=dt.timezone.utc) < cutoff:
                self.drop(pg, name)
                dropped.append(name)
                log(f"Dropped previous database {name!r} (older than {self.job.previous_retention_days} days)")
        return dropped

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
        pattern = re.compile(re.escape(self.restoring_stem()) + r"__restoring_\d{8}_\d{6}$")
        return [name for (name,) in pg.query("SELECT datname FROM pg_database ORDER BY 1", db="postgres")
                if pattern.match(name)]

    def drop_leftovers(self, pg: PgClient, log: RunLog) -> list[str]:
        """Drop the full-size databases dead runs left (``leftovers``), saying so."""
        dropped = []
        for name in self.leftovers(pg):
            try:
                size = human(pg.query("SELECT pg_database_size(%s)", (name,), db="postgres")[0][0])
            except PgError:
                size = "size unknown"
            self.drop(pg, name)
            dropped.append(name)
            log(f"Dropped {name!r} ({size}), left behind by an interrupted restore: no run holds the restore lock "
                f"of {self.job.db!r}")
        return dropped

    def write_intent(self, record: dict[str, Any]) -> None:
        restore_intent.write(self.job.backup_dir, self.job.db, {
            "started_at": iso(self.now), "log_file": self.result.get("log_file"),
            "source": (self.result.get("source") or {}).get("ref"), **record})

    @staticmethod
    def reopen(pg: PgClient, name: str) -> bool:
        """Allow connections to ``name`` again if a run closed it; True when it did."""
        rows = pg.query("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,), db="postgres")
        if not rows or rows[0][0]:
            return False
        pg.query(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS true", db="postgres")
        return True

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
            report["reopened"] = [name for name in (job.db, intent.get("previous")) if name and self.reopen(pg, name)]
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
                self.close_target(pg, db, log)
                pg.query(f"ALTER DATABASE {quote_ident(db)} RENAME TO {quote_ident(aside)}", db="postgres")
                pg.query(f"ALTER DATABASE {quote_ident(aside)} WITH ALLOW_CONNECTIONS true", db="postgres")
                report["set_aside"] = aside
                log(f"The half-restored {db!r} it left is kept as {aside!r}: drop it once you no longer need it")
            log(f"Finishing the fall-back of the interrupted restore: restoring the safety backup {safety} into {db!r}...")
            source = self.sources.find(safety, None, None, log)
            path = self.sources.fetch_verified(source, source.manifest.file, log, keep=True)
            self.create_database(pg, db, tuple(intent["settings"]) if intent.get("settings") else None)
            self.result["changed"] = True
            try:
                self.apply_extras(pg, list(intent.get("extras") or []), db)
                self.pg_restore(pg, path, source.manifest.compression, db, log)
                report["tables"] = self.verify_restored(pg, db, source.manifest, log)
            except BaseException:
                self.drop(pg, db)
                raise
        except ConfigError:
            raise
        except DoctorqError as exc:
            raise DoctorqError(f"finishing the fall-back of {who} failed: {exc} {db!r} is still missing; what it held "
                               f"before is in the safety backup {safety}. Fix the cause and run again ({intent['file']} "
                               "stays until the fall-back is done; to restore another backup instead, remove it "
                               "first).") from None
        log(f"{db!r} is back as it was before the interrupted restore (the safety backup {safety})")

    def take_safety_backup(self, log: RunLog) -> dict[str, Any]:
        def backup(safety_dir: str) -> dict[str, Any]:
            return run_backup(BackupJob(conn=self.job.conn.with_db(self.job.db), db=self.job.db, backup_dir=safety_dir,
                                        weekly="never", prune=False))
        return self.safety_backup(repr(self.job.db), backup, log)["backup"]

    def restore_globals(self, pg: PgClient, path: str, compression: str, log: RunLog) -> None:
        """Roles and tablespaces (pg_dumpall's SQL) through psql, which stops at the first error: none is ignored.

        The roles and tablespaces that exist are kept as they are: their
        CREATE statements are left out (``skip_existing``), so the server's own
        superuser, in every globals file, is not an error.
        """
        decompress = pipeline.decompressor_argv(compression)
        try:
            with open(path, "rb") as inp:
                if decompress:
                    with procs.Pipe([decompress], stdin=inp) as pipe:
                        script = pipe.stdout.read()
                        pipe.wait()
                else:
                    script = inp.read()
            roles = {r for (r,) in pg.query("SELECT rolname FROM pg_roles", db="postgres")}
            spaces = {t for (t,) in pg.query("SELECT spcname FROM pg_tablespace", db="postgres")}
            script, kept = skip_existing(script, roles, spaces)
            procs.run([pg.tool("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
                      env=pg.env("postgres"), input=script)
        except procs.ProcessFailed as exc:
            raise PgError(f"restoring the globals (roles, tablespaces) from {path} failed: {pg.explain(str(exc))}. "
                          "No database was restored; roles created before the failing statement stay. Fix the cause "
                          "(restoring roles takes a superuser as login_user), or restore without restore_globals.") from None
        log(f"Globals restored ({kept} existing role(s)/tablespace(s) kept as they were)")

    # -- the run (RestoreRun.run) ---------------------------------------------------------
    def log_name(self) -> str:
        return f"restore_{encode_name(self.job.db)}_{self.stamp}.log"

    def title(self) -> str:
        return f"Restore of database {self.job.db!r}"

    def work(self, log: RunLog, check_mode: bool) -> None:
        job = self.job
        if check_mode:
            self._plan(log)
        else:
            with Lock(lock_path(job.backup_dir, job.db), f"a backup or restore of database {job.db!r}"):
                self._run(log)

    def audit_record(self) -> dict[str, Any]:
        return {"database": self.job.db, "mode": self.job.mode,
                "previous_database": self.result.get("previous_database")}

    def event(self, status: str, error: str | None) -> dict[str, Any]:
        job = self.job
        summary = (f"Restore of {job.db} on {socket.gethostname()} from {self.result.get('source', {}).get('id')}: "
                   f"{status}" + (f" ({error})" if error else ""))
        return {"event": "restore", "status": status, "database": job.db, "host": socket.gethostname(),
                "summary": summary, "error": error, "source": self.result.get("source"),
                "duration_s": self.result["duration_s"]}

    def _describe(self, source: Source) -> None:
        m = source.manifest
        self.result["source"] = {"id": m.id, "database": m.database, "kind": m.kind, "location": m.location,
                                 "ref": source.ref, "started_at": m.started_at, "size": m.size}
        self.result["checksums"] = {"sha256": m.sha256, "md5": m.md5, "verified": False}

    def _names(self, source: Source) -> list[str]:
        names = [source.manifest.file]
        if self.job.restore_globals:
            if not source.manifest.globals:
                raise ConfigError(f"restore_globals is set but backup {source.manifest.id} has no globals file "
                                  "(back up with globals: true).")
            names.append(source.manifest.globals["file"])
        return names

    def _plan(self, log: RunLog) -> Source:
        source = self.find_source(log)
        self._describe(source)
        with PgClient(self.job.conn) as pg, self.restore_lock(pg):
            exists = self.target_exists(pg)
            pg.tool("pg_restore")
            leftovers = self.leftovers(pg)
        names = self._names(source)
        state = self.sources.archive_state(source, names, request=False)
        plan: dict[str, Any] = {"target_exists": exists, "confirmation_ok": not exists or self.job.confirm == self.job.db,
                                "archive_state": state, "drop_leftovers": leftovers}
        intent = restore_intent.read(self.job.backup_dir, self.job.db)
        if intent:
            plan["finish_interrupted"] = {k: intent.get(k) for k in ("mode", "phase", "pid", "started_at", "safety_backup")}
        if state == "available":
            m = source.manifest
            self.sources.fetch_verified(source, m.file, log, keep=False)
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
            pg.tool("pg_restore")
            names = self._names(source)
            if self.sources.wait_for_archive(source, names, log) == "pending":
                return source
            local_path = self.sources.fetch_verified(source, m.file, log, keep=True)
            self.result["checksums"]["verified"] = True
            globals_path = None
            if job.restore_globals:
                globals_path = self.sources.fetch_verified(source, m.globals["file"], log, keep=True)
            try:
                if exists and job.safety_backup:
                    self.result["safety_backup"] = self.take_safety_backup(log)["path"]
                if globals_path:
                    self.restore_globals(pg, globals_path, m.compression, log)
                if job.mode == "swap":
                    self._swap_mode(pg, local_path, m, exists, log)
                else:
                    self._replace_mode(pg, local_path, m, exists, log)
                self.result["pruned_previous"] = self.prune_previous(pg, log)
            finally:
                if source.store.remote:  # downloads of the backup, not the backup itself
                    for path in (local_path, globals_path):
                        if path:
                            pipeline.remove_quietly(path)
        log.banner("RESTORE COMPLETED SUCCESSFULLY")
        return source

    @staticmethod
    def same_file(source: Source, path: str) -> bool:
        return not source.store.remote and os.path.realpath(source.ref) == os.path.realpath(path)

    def _swap_mode(self, pg: PgClient, local_path: str, m: Manifest, exists: bool, log: RunLog) -> None:
        new = self.derived_name("restoring")
        log(f"Restoring into a new database {new!r}...")
        self.create_database(pg, new, self.db_settings(pg, self.job.db) if exists else None)
        self.result["changed"] = True
        try:
            self.pg_restore(pg, local_path, m.compression, new, log)
            self.result["tables"] = self.verify_restored(pg, new, m, log)
            if exists:
                self.apply_extras(pg, self.database_extras(pg, self.job.db), new)
            previous = self.swap(pg, new, exists, log)
        except BaseException:
            self.drop(pg, new)
            log(f"Dropped the half-restored database {new!r}; {self.job.db!r} is untouched")
            raise
        self.result["previous_database"] = previous
        if previous and self.job.drop_previous:
            self.drop(pg, previous)
            log(f"Dropped the previous database {previous!r} (drop_previous)")
            self.result["previous_dropped"] = True

    def _replace_mode(self, pg: PgClient, local_path: str, m: Manifest, exists: bool, log: RunLog) -> None:
        settings = self.db_settings(pg, self.job.db) if exists else None
        extras = self.database_extras(pg, self.job.db) if exists else []
        safety = self.result.get("safety_backup")
        if exists:
            # what a run killed from here on leaves to the next one: the fall-back to the safety backup
            intent = {"mode": "replace", "phase": "closing", "safety_backup": safety, "settings": settings,
                      "extras": extras}
            if safety:
                self.write_intent(intent)
            self.close_target(pg, self.job.db, log)
            log(f"Dropping the existing database {self.job.db!r}...")
            pg.query(f"DROP DATABASE {quote_ident(self.job.db)}", db="postgres")
            if safety:
                self.write_intent({**intent, "phase": "dropped"})
        self.result["changed"] = True
        try:
            self.create_database(pg, self.job.db, settings)
            self.apply_extras(pg, extras, self.job.db)
            self.pg_restore(pg, local_path, m.compression, self.job.db, log)
            self.result["tables"] = self.verify_restored(pg, self.job.db, m, log)
            restore_intent.remove(self.job.backup_dir, self.job.db)
        except DoctorqError as exc:
            if not safety:
                self.drop(pg, self.job.db)
                raise
            log(f"Restore failed ({exc}); restoring the safety backup {safety}...")
            try:
                self.drop(pg, self.job.db)
                self.create_database(pg, self.job.db, settings)
                self.apply_extras(pg, extras, self.job.db)
                self.pg_restore(pg, safety, BackupJob.compression, self.job.db, log)
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
