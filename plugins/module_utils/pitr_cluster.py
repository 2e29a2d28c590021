# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The clusters a point-in-time recovery drives: the live one and the scratch one, as the cluster's OS user.

``pg_ctl`` (or the systemd unit) stops and starts them, ``pg_ctl status``
and ``pg_controldata`` say whether they run and have promoted, read as the
cluster's OS user: a run as root that peer authentication refuses still
knows. Queries go through ``Sql``: the connection options, or psql as that
OS user on the same socket (``Cluster.route``). A scratch server gets its own
settings: a unix socket in its 0700 data directory only, archiving off.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import socket
import time
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import tool_env
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_plan import live_dir
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import pg_bin
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog

SCRATCH_MARK = "doctorq_pitr_scratch"
# After the control file says the server left recovery: how long it may take to accept this run's queries.
LOGIN_GRACE = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sql:
    """One way into a server for PITR's few queries; rows come back as JSON objects whichever way it is.

    Directly with the connection options; or, when those are refused to a run
    as root (Debian's ``local all all peer`` admits only the OS user of the
    same name), through ``psql`` run as the cluster's OS user over the same
    unix socket, where its own role gets in.
    """

    def __init__(self, conn: PgConn, owner: str | None = None, psql: str | None = None) -> None:
        self.conn, self.owner, self.psql = conn, owner, psql

    def query(self, sql: str, db: str = "postgres") -> list[dict[str, Any]]:
        wrapped = f"SELECT coalesce(json_agg(q), '[]'::json)::text FROM ({sql}) AS q"
        if self.owner is None:
            with PgClient(self.conn) as pg:
                return json.loads(pg.query(wrapped, db=db)[0][0])
        env = tool_env()
        env.update(PGPORT=str(self.conn.port), PGUSER=self.owner, PGDATABASE=db, PGAPPNAME="doctorq-backup",
                   PGCONNECT_TIMEOUT=str(self.conn.connect_timeout))
        if self.conn.libpq_host:
            env["PGHOST"] = self.conn.libpq_host  # a socket directory: see Cluster.route
        try:
            done = procs.run([self.psql or "psql", "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-c", wrapped],
                             env=env, user=self.owner, timeout=self.conn.connect_timeout + 120)
        except procs.ProcessFailed as exc:
            raise PgError(f"psql as the OS user {self.owner} on {self.conn.where}: "
                          f"{' '.join(exc.stderr.split())[-400:] or exc}") from None
        return json.loads(done.stdout.strip() or "[]")


class Cluster:
    """Start, stop, watch and reach the clusters of one recovery; each phase's seconds added to ``durations``."""

    def __init__(self, job: PitrJob, durations: dict[str, float]) -> None:
        self.job = job
        self.durations = durations
        self.info_version: str | None = None  # the repository's PostgreSQL major, once read
        self._routes: dict[PgConn, Sql] = {}

    def timed(self, phase: str, started: float) -> None:
        self.durations[phase] = round(self.durations.get(phase, 0.0) + time.monotonic() - started, 3)

    # -- as the cluster's OS user ---------------------------------------------------
    def as_owner(self, argv: list[str], timeout: float = 600, check: bool = True) -> procs.Done:
        """A PostgreSQL program run as the cluster's OS user (pg_ctl refuses root), with a deadline."""
        done = procs.run(argv, env=tool_env(), user=self.job.user, timeout=timeout, check=False)
        if check and done.status != 0:
            raise PgError(f"{os.path.basename(argv[0])} {' '.join(argv[1:3])} failed (exit {done.status}): "
                          f"{done.output[-400:]}")
        return done

    def chown(self, path: str) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.job.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def write_owned(self, path: str, text: str) -> None:
        write_file_atomic(path, text.encode(), mode=0o600)
        self.chown(path)

    def tool(self, name: str) -> str:
        """A program of the cluster's PostgreSQL major (its PG_VERSION), else of the repository's."""
        major = None
        try:
            with open(os.path.join(live_dir(self.job), "PG_VERSION"), encoding="ascii") as handle:
                major = handle.read().strip()
        except OSError:
            pass
        return pg_bin(name, major or self.info_version, self.job.conn.bin_dir)

    def pg_ctl(self) -> str:
        return self.tool("pg_ctl")

    # -- state ----------------------------------------------------------------------
    def running(self, data_dir: str) -> bool:
        """``pg_ctl status`` as the cluster's OS user: true whoever may log in (root is refused by peer auth)."""
        return self.as_owner([self.pg_ctl(), "status", "-D", data_dir], timeout=60, check=False).status == 0

    def route(self, conn: PgConn, log: RunLog) -> Sql:
        """How this run queries ``conn``'s server: its options, else psql as the cluster's OS user on its socket."""
        if conn in self._routes:
            return self._routes[conn]
        direct = Sql(conn)
        try:
            direct.query("SELECT 1 AS ok")
            self._routes[conn] = direct
            return direct
        except DoctorqError as exc:
            refused = exc
        if conn.host and not conn.host.startswith("/") and not conn.unix_socket:
            raise refused  # TCP: the OS user gets no further than we do
        owner = Sql(conn, self.job.user, self.tool("psql"))
        try:
            owner.query("SELECT 1 AS ok")
        except DoctorqError as exc:
            raise PgError(f"{refused}; and as the OS user {self.job.user} through psql: {exc}") from None
        log(f"This run's login is refused ({refused}): its queries run as the OS user {self.job.user} through psql "
            "on the same socket")
        self._routes[conn] = owner
        return owner

    def promoted(self, data_dir: str) -> bool:
        """Out of recovery, read without logging in: no signal file left, the control file in production, running.

        pgBackRest's restore leaves a recovery.signal; PostgreSQL removes it
        when recovery ends, just before it marks the control file "in
        production" (which the backup's copy already said before the start).
        """
        if any(os.path.exists(os.path.join(data_dir, name)) for name in ("recovery.signal", "standby.signal")):
            return False
        control = self.as_owner([self.tool("pg_controldata"), "-D", data_dir], timeout=60, check=False)
        if control.status != 0 or not re.search(r"^Database cluster state:\s+in production\s*$", control.stdout, re.M):
            return False
        return self.running(data_dir)

    # -- the live cluster -----------------------------------------------------------
    def stop_live(self, data_dir: str, log: RunLog) -> None:
        started = time.monotonic()
        if self.job.service:
            log(f"Stopping PostgreSQL (systemctl stop {self.job.service})...")
            stop = procs.run(["systemctl", "stop", self.job.service], timeout=900, check=False)
            if stop.status != 0:
                raise PgError(f"systemctl stop {self.job.service} failed: {stop.output[-400:]}")
        elif os.path.exists(os.path.join(data_dir, "postmaster.pid")):
            log(f"Stopping PostgreSQL (pg_ctl -D {data_dir} stop -m fast)...")
            stop = self.as_owner([self.pg_ctl(), "-D", data_dir, "-m", "fast", "-w", "-t", "900", "stop"], timeout=960,
                                 check=False)
            if stop.status != 0 and self.as_owner([self.pg_ctl(), "-D", data_dir, "status"], check=False).status == 3:
                raise PgError(f"{data_dir}/postmaster.pid is left from a server that is not running (a crash): make sure "
                              "no postgres process uses the directory, remove the file, and run again. Nothing was "
                              "restored.")
            if stop.status != 0:
                raise PgError(f"pg_ctl stop failed on {data_dir}: {stop.output[-300:]}")
        if os.path.exists(os.path.join(data_dir, "postmaster.pid")):
            raise PgError(f"PostgreSQL still runs on {data_dir} (postmaster.pid is there): stop it, then run again.")
        log("PostgreSQL is stopped")
        self.timed("stop", started)

    def start_live(self, data_dir: str, log: RunLog) -> str | None:
        started = time.monotonic()
        if self.job.service:
            log(f"Starting PostgreSQL (systemctl start {self.job.service})...")
            start = procs.run(["systemctl", "start", self.job.service], timeout=900, check=False)
            if start.status != 0:  # a long recovery outlasts the unit's start timeout: the wait below decides
                log(f"systemctl start {self.job.service} exited {start.status}: {start.output[-300:]}; waiting for "
                    "the recovery all the same")
            server_log = None
        else:
            server_log = os.path.join(data_dir, "log", "doctorq-pitr-startup.log")
            os.makedirs(os.path.dirname(server_log), mode=0o700, exist_ok=True)
            self.chown(os.path.dirname(server_log))
            log(f"Starting PostgreSQL (pg_ctl -D {data_dir} start, log {server_log})...")
            self.as_owner([self.pg_ctl(), "-D", data_dir, "-l", server_log, "-W", "start"])
        self.timed("start", started)
        return server_log

    # -- the scratch cluster --------------------------------------------------------
    def start_scratch(self, data_dir: str, port: int, created: str, log: RunLog) -> str:
        """A private server on the scratch copy: unix socket in the data directory, never TCP, archiving off."""
        started = time.monotonic()
        if not os.path.exists(os.path.join(data_dir, "postgresql.conf")):
            # Debian keeps postgresql.conf in /etc/postgresql: the copy has only postgresql.auto.conf
            self.write_owned(os.path.join(data_dir, "postgresql.conf"), "# scratch cluster of doctorq.backup\n")
        hba = os.path.join(data_dir, f"{SCRATCH_MARK}_hba.conf")
        self.write_owned(hba, "# scratch cluster: only local connections, through a socket in its 0700 data directory\n"
                              "local all all trust\n")
        self.write_owned(os.path.join(data_dir, SCRATCH_MARK), json.dumps({"stanza": self.job.stanza, "port": port,
                                                                           "created": created}) + "\n")
        settings = {
            "data_directory": data_dir, "port": str(port), "listen_addresses": "", "unix_socket_directories": data_dir,
            "hba_file": hba, "external_pid_file": "", "archive_mode": "off", "hot_standby": "off",
            "shared_buffers": "128MB", "logging_collector": "off", "cluster_name": "doctorq-pitr-scratch",
            "synchronous_standby_names": "", "primary_conninfo": "", "ssl": "off",
        }
        options = " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in settings.items())
        server_log = os.path.join(data_dir, f"{SCRATCH_MARK}.log")
        log(f"Starting the scratch cluster on port {port} (unix socket in {data_dir}, archiving off)...")
        self.as_owner([self.pg_ctl(), "-D", data_dir, "-l", server_log, "-o", options, "-W", "start"])
        self.timed("start", started)
        return server_log

    def stop_scratch(self, data_dir: str, log: RunLog, remove: bool) -> None:
        started = time.monotonic()
        if os.path.exists(os.path.join(data_dir, "postmaster.pid")):
            for mode in ("fast", "immediate"):
                self.as_owner([self.pg_ctl(), "-D", data_dir, "-m", mode, "-w", "-t", "120", "stop"], timeout=180, check=False)
                if not os.path.exists(os.path.join(data_dir, "postmaster.pid")):
                    break
        if remove:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(data_dir + ".tablespaces", ignore_errors=True)
            log(f"Scratch cluster stopped and removed ({data_dir})")
        else:
            log(f"Scratch cluster stopped ({data_dir})")
        self.timed("cleanup", started)

    # -- recovery -------------------------------------------------------------------
    def wait_promoted(self, conn: PgConn, data_dir: str, server_log: str | None, log: RunLog) -> Sql:
        """Until the server has left recovery and answers this run; fail with its log when it exits.

        Promotion is read from the data directory as the cluster's OS user,
        so a run whose login is refused fails at once, never after
        timeout. Returns the way to query the recovered server.
        """
        started = time.monotonic()
        deadline = started + self.job.timeout
        promoted_at: float | None = None
        last = "still in recovery"
        log("Waiting for recovery to reach its target and the server to promote...")
        while time.monotonic() < deadline:
            if promoted_at is None and self.promoted(data_dir):
                promoted_at = time.monotonic()
                self.timed("recovery", started)
                log(f"Recovery finished after {promoted_at - started:.1f}s")
            if promoted_at is not None:
                try:
                    sql = self.route(conn, log)
                    if not sql.query("SELECT pg_is_in_recovery() AS in_recovery")[0]["in_recovery"]:
                        return sql
                except DoctorqError as exc:
                    last = str(exc)
                if time.monotonic() - promoted_at > LOGIN_GRACE:
                    raise PgError(f"the recovery on {data_dir} finished (the server is out of recovery) but it cannot be "
                                  f"verified: {last}. Check it as the database OS user (sudo -u {self.job.user} psql); "
                                  "next time set login_unix_socket/login_port/login_user/login_password so this run "
                                  f"can log in, or run as {self.job.user}.")
            elif time.monotonic() - started > 5 and self._server_died(data_dir):
                raise PgError(f"PostgreSQL on {data_dir} stopped during recovery: {self._tail(server_log)}")
            time.sleep(0.5)
        raise PgError(f"recovery on {data_dir} did not finish within timeout={self.job.timeout}s ({last}); "
                      f"{self._tail(server_log)}")

    def _server_died(self, data_dir: str) -> bool:
        if self.job.service:
            return procs.run(["systemctl", "is-failed", "--quiet", self.job.service], timeout=60, check=False).status == 0
        return not os.path.exists(os.path.join(data_dir, "postmaster.pid"))

    def _tail(self, path: str | None, lines: int = 8) -> str:
        if not path:
            return f"see the server's log (journalctl -u {self.job.service})"
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()[-20000:]
        except OSError:
            return f"no server log at {path}"
        wanted = [line for line in text.splitlines() if re.search(r"FATAL|PANIC|ERROR|recovery|consistent", line)]
        return "server log: " + " | ".join((wanted or text.splitlines())[-lines:])
