# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL client side: connection options, client tools, SQL.

The password reaches libpq through a 0600 passfile in a private temporary
directory (``PGPASSFILE``) for the client programs and as a keyword for
psycopg2; never through argv, where ``ps`` shows it to every user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
from typing import Any, Iterator

from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.libs import optional
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import own_like_parent, private_dir

psycopg2, PSYCOPG2 = optional("psycopg2", "psycopg2-binary", "extensions")


# SQLSTATE of "canceling statement due to lock timeout" (lock_timeout).
LOCK_NOT_AVAILABLE = "55P03"


def gave_up_on_a_lock(stderr: str) -> bool:
    """Whether pg_dump failed on ``--lock-wait-timeout`` (a statement timeout on its LOCK TABLE, or a lock timeout)."""
    return "due to lock timeout" in stderr or ("due to statement timeout" in stderr and "LOCK TABLE" in stderr)


# Tables up to this size get an exact row count in the manifest (a count(*) of 64 MiB is a few ms).
EXACT_COUNT_MAX_BYTES = 64 * 1024 * 1024


def postgres_argument_spec() -> dict[str, Any]:
    """Connection options (doc fragment ``doctorq.backup.postgres``), named as in community.postgresql."""
    return dict(
        login_host=dict(type="str", default="", aliases=["host"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_user=dict(type="str", default="postgres", aliases=["login"]),
        login_password=dict(type="str", default="", no_log=True),
        login_unix_socket=dict(type="str", default="", aliases=["unix_socket"]),
        db=dict(type="str", aliases=["login_db"]),
        ssl_mode=dict(type="str", default="prefer",
                      choices=["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_timeout=dict(type="int", default=10),
        pg_bin_dir=dict(type="path"),
    )


@dataclasses.dataclass(frozen=True)
class PgConn:
    """How to reach one PostgreSQL server."""

    host: str = ""
    port: int = 5432
    user: str = "postgres"
    password: str = dataclasses.field(default="", repr=False)
    unix_socket: str = ""
    db: str | None = None
    ssl_mode: str = "prefer"
    ca_cert: str | None = None
    connect_timeout: int = 10
    bin_dir: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PgConn":
        timeout = 10 if params.get("connect_timeout") is None else int(params["connect_timeout"])
        if timeout < 1:
            # libpq reads 0 or less as "wait for ever": a host that accepts and never answers would hold the run
            raise ConfigError(f"connect_timeout is {timeout}: give the seconds to wait for PostgreSQL to answer, at "
                              "least 1 (the default is 10).")
        return cls(
            host=params.get("login_host") or "",
            port=int(params.get("login_port") or 5432),
            user=params.get("login_user") or "postgres",
            password=params.get("login_password") or "",
            unix_socket=params.get("login_unix_socket") or "",
            db=params.get("db"),
            ssl_mode=params.get("ssl_mode") or "prefer",
            ca_cert=params.get("ca_cert"),
            connect_timeout=timeout,
            bin_dir=params.get("pg_bin_dir"),
        )

    def with_db(self, db: str) -> "PgConn":
        return dataclasses.replace(self, db=db)

    @property
    def libpq_host(self) -> str:
        return self.unix_socket or self.host

    @property
    def where(self) -> str:
        host = self.libpq_host or "local socket"
        return f"{host}:{self.port}"


def _passfile_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PgClient:
    """Owns the passfile for one run; give it to every client program and query.

    Use as a context manager so the passfile is removed however the run ends.
    """

    def __init__(self, conn: PgConn) -> None:
        self.conn = conn
        self._tmpdir: str | None = None
        self._stack: contextlib.ExitStack | None = None
        self._server: tuple[int, str] | None = None
        self._tools: dict[str, str] = {}

    def __enter__(self) -> "PgClient":
        if self.conn.password:
            self._stack = contextlib.ExitStack()
            try:
                self._tmpdir = self._stack.enter_context(private_dir("pg"))
                path = os.path.join(self._tmpdir, "pgpass")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(f"*:*:*:*:{_passfile_escape(self.conn.password)}\n")
                own_like_parent(path)
            except BaseException:
                self._stack.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack, self._tmpdir = None, None

    # -- environment for client programs ---------------------------------
    def env(self, db: str | None = None) -> dict[str, str]:
        """Environment for pg_dump & co.: libpq variables, C locale, no inherited PG* surprises."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", PGAPPNAME="doctorq-backup", PGPORT=str(self.conn.port),
                   PGUSER=self.conn.user, PGSSLMODE=self.conn.ssl_mode,
                   PGCONNECT_TIMEOUT=str(self.conn.connect_timeout))
        if self.conn.libpq_host:
            env["PGHOST"] = self.conn.libpq_host
        if db or self.conn.db:
            env["PGDATABASE"] = db or self.conn.db or ""
        if self.conn.ca_cert:
            env["PGSSLROOTCERT"] = self.conn.ca_cert
        if self._tmpdir:
            env["PGPASSFILE"] = os.path.join(self._tmpdir, "pgpass")
        else:
            env["PGPASSFILE"] = os.devnull
        return env

    # -- SQL ---------------------------------------------------------------
    def connect(self, db: str | None = None):
        """An autocommit psycopg2 connection; errors become PgError saying what to check."""
        PSYCOPG2.require(PgError)
        dbname = db or self.conn.db or "postgres"
        kwargs: dict[str, Any] = dict(dbname=dbname, user=self.conn.user, port=self.conn.port,
                                      sslmode=self.conn.ssl_mode, connect_timeout=self.conn.connect_timeout,
                                      application_name="doctorq-backup")
        if self.conn.libpq_host:
            kwargs["host"] = self.conn.libpq_host
        if self.conn.password:
            kwargs["password"] = self.conn.password
        if self.conn.ca_cert:
            kwargs["sslrootcert"] = self.conn.ca_cert
        try:
            conn = psycopg2.connect(**kwargs)
        except psycopg2.OperationalError as exc:
            raise PgError(self.explain(str(exc), dbname)) from None
        conn.autocommit = True
        return conn

    def explain(self, message: str, dbname: str | None = None) -> str:
        """A libpq/psql failure in words that say what to fix. Never echoes the password."""
        text = " ".join(message.split())
        if self.conn.password:
            text = text.replace(self.conn.password, "********")
        where = f"PostgreSQL at {self.conn.where} as user {self.conn.user!r}"
        if "password authentication failed" in text or "no password supplied" in text:
            return f"authentication failed for {where}: check login_user and login_password ({text})."
        if re.search(r'database ".*" does not exist', text):
            return f"database {dbname!r} does not exist on {self.conn.where}: check the db option or create it ({text})."
        if "Connection refused" in text or "could not connect" in text or "timeout expired" in text \
                or "could not translate host name" in text or "No such file or directory" in text:
            return f"cannot connect to {where}: is the server running, and are login_host/login_port/login_unix_socket right? ({text})"
        if "permission denied" in text:
            return f"permission denied on {where}: the user needs the privileges to read every object ({text})."
        return f"{where}: {text}"

    def query(self, sql: str, args: tuple | None = None, db: str | None = None) -> list[tuple]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        except psycopg2.Error as exc:
            raise PgError(self.explain(str(exc), db)) from None
        finally:
            conn.close()

    def server_version(self) -> tuple[int, str]:
        """(major, full version string) of the server, cached."""
        if self._server is None:
            rows = self.query("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
            num, full = rows[0]
            self._server = (num // 10000, full)
        return self._server

    def database_exists(self, db: str) -> bool:
        return bool(self.query("SELECT 1 FROM pg_database WHERE datname = %s", (db,), db="postgres"))

    @contextlib.contextmanager
    def session_lock(self, key: str) -> Iterator[dict[str, Any] | None]:
        """Try the server's advisory lock ``key``, held by a session of its own for the ``with`` block.

        Yields None when this run holds it, else who does (``pid``, ``client``,
        ``since`` of that PostgreSQL session). The server releases it when the
        session ends, however the run ends: a ``kill -9`` cannot leave it taken.
        """
        conn = self.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
                holder = None
                if not cur.fetchone()[0]:
                    cur.execute("SELECT a.pid, coalesce(host(a.client_addr), 'the local socket'), "
                                "to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                                "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)", (key,))
                    row = cur.fetchone() or (None, None, None)
                    holder = dict(zip(("pid", "client", "since"), row))
        except psycopg2.Error as exc:
            conn.close()
            raise PgError(self.explain(str(exc))) from None
        try:
            yield holder
        finally:
            conn.close()

    @contextlib.contextmanager
    def snapshot(self, db: str, lock_wait_timeout: int = 0) -> Iterator["Snapshot"]:
        """A read-only repeatable-read transaction whose snapshot ``pg_dump --snapshot`` can share.

        Facts read through it (tables, exact row counts) describe exactly
        the data in the dump, even while the database is being written to.
        Behind a table's exclusive lock its reads wait ``lock_wait_timeout``
        seconds at most (0: for ever), then fail naming the sessions holding it.
        """
        conn = self.connect(db)
        try:
            conn.autocommit = False
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                if lock_wait_timeout:
                    cur.execute("SET lock_timeout = %s", (f"{lock_wait_timeout}s",))
                cur.execute("SELECT pg_export_snapshot()")
                snap_id = cur.fetchone()[0]
                yield Snapshot(snap_id, cur, self)
        except psycopg2.Error as exc:
            if getattr(exc, "pgcode", None) == LOCK_NOT_AVAILABLE:
                raise PgError(self.lock_wait_failure(db, lock_wait_timeout)) from None
            raise PgError(self.explain(str(exc), db)) from None
        finally:
            conn.rollback()
            conn.close()

    def lock_wait_failure(self, db: str, seconds: int) -> str:
        """Why a backup gave up waiting for a table's lock, naming the sessions that hold exclusive ones in ``db``."""
        try:
            held = self.query(
                "SELECT l.relation::regclass::text, l.pid, coalesce(a.state, ''), coalesce(a.application_name, ''), "
                "coalesce(extract(epoch FROM now() - a.xact_start)::int, 0) "
                "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock' "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.pid <> pg_backend_pid() ORDER BY 2, 1", db=db)
        except PgError:
            held = []
        # never the session's query text: it may carry a secret (a password in an ALTER ROLE, say)
        who = "; ".join(f"table {table} by session {pid} ({state or 'unknown state'}, application "
                        f"{app or 'unnamed'!r}, transaction open for {age}s)"
                        for table, pid, state, app, age in held) or "no session holds one any more"
        return (f"the backup of {db!r} waited {seconds}s (lock_wait_timeout={seconds}) for tables locked exclusively "
                f"(ALTER TABLE, VACUUM FULL, TRUNCATE, a migration left open): {who}. End that transaction (SELECT "
                "pg_terminate_backend(pid)) or raise lock_wait_timeout, then run again; nothing of this backup is "
                "listed.")

    def table_facts(self, db: str, exact_max_bytes: int = EXACT_COUNT_MAX_BYTES) -> list[dict[str, Any]]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                return Snapshot("", cur, self).table_facts(exact_max_bytes)
        except psycopg2.Error as exc:
            raise PgError(self.explain(str(exc), db)) from None
        finally:
            conn.close()

    # -- client programs ---------------------------------------------------
    def tool(self, name: str) -> str:
        """Path of ``name`` (pg_dump, pg_restore, ...) not older than the server's major version.

        Looks in ``pg_bin_dir`` if set (and only there), else in Debian's
        /usr/lib/postgresql/<major>/bin, else on PATH.
        """
        if name in self._tools:
            return self._tools[name]
        major, full = self.server_version()
        if self.conn.bin_dir:
            candidates = [os.path.join(self.conn.bin_dir, name)]
        else:
            candidates = [os.path.join(f"/usr/lib/postgresql/{major}/bin", name)]
            found = shutil.which(name)
            if found:
                candidates.append(found)
        seen: list[str] = []
        for path in candidates:
            if not os.access(path, os.X_OK):
                continue
            tool_major = client_major(path)
            seen.append(f"{path} ({tool_major})")
            if tool_major >= major:
                self._tools[name] = path
                return path
        where = f"pg_bin_dir {self.conn.bin_dir}" if self.conn.bin_dir else "/usr/lib/postgresql/*/bin or PATH"
        if seen:
            raise PgError(f"{name} is older than the server ({full}): found {', '.join(seen)}; install "
                          f"postgresql-client-{major} (the client role does) or point pg_bin_dir at version {major} or newer.")
        raise PgError(f"{name} not found in {where}: install postgresql-client-{major} (the client role does) or set pg_bin_dir.")


@dataclasses.dataclass
class Snapshot:
    """A cursor inside one snapshot (exported as ``id`` when taken by ``PgClient.snapshot``)."""

    id: str
    cur: Any
    client: PgClient

    def table_facts(self, exact_max_bytes: int = EXACT_COUNT_MAX_BYTES) -> list[dict[str, Any]]:
        """User tables with sizes, row estimates, and exact row counts for tables up to ``exact_max_bytes``."""
        self.cur.execute(
            """
            SELECT n.nspname, c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2
            """
        )
        facts = []
        for schema, name, estimate, size in self.cur.fetchall():
            rows = None
            if size <= exact_max_bytes:
                self.cur.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(name)}")
                rows = int(self.cur.fetchone()[0])
            facts.append(dict(schema=schema, name=name, rows=rows,
                              rows_estimate=int(estimate) if estimate >= 0 else None, bytes=int(size)))
        return facts


def client_major(path: str) -> int:
    """Major version of a client program, from ``--version`` (asked once per program file: a run asks several times)."""
    try:
        info = os.stat(path)
    except OSError:
        return _client_major(path, None)
    return _client_major(path, (info.st_dev, info.st_ino, info.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _client_major(path: str, _identity: tuple[int, int, int] | None) -> int:
    try:
        out = procs.run([path, "--version"], timeout=30).stdout
    except procs.ProcessFailed as exc:
        raise PgError(f"cannot run {path} --version: {exc}") from None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        raise PgError(f"cannot read the version of {path} from {out.strip()!r}")
    return int(match.group(1))


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL we build ourselves (database names in DDL)."""
    if "\x00" in name:
        raise ConfigError("database names cannot contain NUL bytes")
    return '"' + name.replace('"', '""') + '"'
