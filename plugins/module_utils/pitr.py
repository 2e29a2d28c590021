# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery of a whole cluster with pgBackRest (``pg_pitr_restore``).

Order of a run, and why:
1. check the options and the confirmation before any slow work;
2. when the server answers, seal the window: one commit now, then
   ``pgbackrest check`` (a WAL switch, waiting until it is archived), so any
   time up to now is a reachable target;
3. compute the recoverable window from the repository (oldest backup's end
   to the newest commit in the archived WAL) and refuse a target outside it:
   PostgreSQL would otherwise replay everything and stop with "recovery
   ended before configured recovery target was reached", leaving the
   cluster down;
4. ``live``: a safety incremental backup, stop the server, ``restore
   --delta`` into its data directory, start it (whether it runs, and when
   it has promoted, is read as its OS user: a run as root that peer
   authentication refuses queries through psql as that user, and a running
   server nobody reaches is refused untouched); ``scratch``: restore into an
   empty directory and start a private server there on another port
   (unix socket only, archiving off so it never writes to the repository);
5. wait for recovery to end (promotion), then verify: not in recovery, the
   recovery point reached is not after the target, every database answers;
6. a drill also measures RTO/RPO, writes its report and metrics, and
   removes the scratch cluster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, IntegrityError, PgBackRestError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import DEFAULT_CONFIG, DEFAULT_USER, PgBackRest, metrics_label, read_conf, tool_env
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import Lineage, StanzaInfo
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import (
    Window, iso_us, last_archived_commit, lineage, parse_time, pg_bin, pg_time, window_of,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import makedirs_owned
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog

TARGETS = ("time", "immediate", "end", "name")
SCRATCH_MARK = "doctorq_pitr_scratch"
# After the control file says the server left recovery: how long it may take to accept this run's queries.
LOGIN_GRACE = 60
# A timestamp as text PITR can compare to the microsecond, whichever way the query went.
UTC_TEXT = "YYYY-MM-DD\"T\"HH24:MI:SS.US"


def pitr_argument_spec() -> dict[str, Any]:
    """The recovery options of pg_pitr_restore (doc: plugins/modules/pg_pitr_restore.py)."""
    return dict(
        target=dict(type="str", choices=list(TARGETS)),
        target_time=dict(type="str"),
        target_name=dict(type="str"),
        backup_set=dict(type="str"),
        into=dict(type="str", default="scratch", choices=["scratch", "live"]),
        data_dir=dict(type="path"),
        service=dict(type="str"),
        scratch_dir=dict(type="path"),
        scratch_port=dict(type="int", default=0),
        keep_scratch=dict(type="bool"),
        drill=dict(type="bool", default=False),
        max_rpo_seconds=dict(type="int", default=900),
        report_dir=dict(type="path"),
        safety_backup=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
    )


# pg_restore_safe's spellings of the same options before pg_pitr_restore (deprecated, removed in 1.0.0): old -> new.
LEGACY_NAMES = {f"pitr_{name}": name for name in pitr_argument_spec()}


def legacy_pitr_argument_spec() -> dict[str, Any]:
    """pg_restore_safe's deprecated ``pitr_*`` options: the same options, prefixed."""
    return {old: pitr_argument_spec()[new] for old, new in LEGACY_NAMES.items()}


def from_legacy(params: dict[str, Any]) -> dict[str, Any]:
    """pg_restore_safe's parameters with its ``pitr_*`` options under pg_pitr_restore's names (for PitrJob).

    ``safety_backup`` is both a logical-restore option of pg_restore_safe and a
    recovery option: here it takes ``pitr_safety_backup``'s value.
    """
    moved = {k: v for k, v in params.items() if k not in LEGACY_NAMES}
    moved.update({new: params.get(old) for old, new in LEGACY_NAMES.items() if old in params})
    return moved


@dataclasses.dataclass(frozen=True)
class PitrJob:
    conn: PgConn
    target: str
    stanza: str = "main"
    config: str = DEFAULT_CONFIG
    user: str = DEFAULT_USER
    target_time: dt.datetime | None = None
    target_name: str | None = None
    backup_set: str | None = None
    into: str = "scratch"
    data_dir: str | None = None
    service: str | None = None
    scratch_dir: str | None = None
    scratch_port: int = 0
    keep_scratch: bool = True
    drill: bool = False
    max_rpo_seconds: int = 900
    report_dir: str | None = None
    safety_backup: bool = True
    timeout: int = 3600
    confirm: str = ""
    backup_dir: str = "/var/backups/postgresql"
    notifier: Notifier = Notifier()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PitrJob":
        target = params.get("target") or ("time" if params.get("drill") else None)
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}.")
        drill = bool(params.get("drill"))
        into = params.get("into") or "scratch"
        if drill and into != "scratch":
            raise ConfigError("a PITR drill never touches the live cluster: use into=scratch with drill.")
        when = params.get("target_time")
        if target == "time" and not when and not drill:
            raise ConfigError("target=time needs target_time (ISO 8601, e.g. 2025-11-07T10:42:00Z).")
        if target != "time" and when:
            raise ConfigError(f"target_time is only used with target=time (not {target}).")
        if target == "name" and not params.get("target_name"):
            raise ConfigError("target=name needs target_name (a restore point made with pg_create_restore_point).")
        port = params.get("scratch_port") or 0
        if port < 0 or port > 65535:
            raise ConfigError("scratch_port must be a TCP port number (or 0 to pick a free one).")
        if (params.get("timeout") or 3600) < 10:
            raise ConfigError("timeout must be at least 10 seconds.")
        keep = params.get("keep_scratch")
        return cls(
            conn=dataclasses.replace(PgConn.from_params(params), db=None), target=target,
            stanza=params.get("stanza") or "main", config=params.get("pgbackrest_config") or DEFAULT_CONFIG,
            user=params.get("pgbackrest_user") or DEFAULT_USER,
            target_time=parse_time(when, "target_time") if when else None,
            target_name=params.get("target_name"), backup_set=params.get("backup_set"), into=into,
            data_dir=params.get("data_dir"), service=params.get("service"),
            scratch_dir=params.get("scratch_dir"), scratch_port=port,
            keep_scratch=(not drill) if keep is None else bool(keep), drill=drill,
            max_rpo_seconds=params.get("max_rpo_seconds") if params.get("max_rpo_seconds") is not None else 900,
            report_dir=params.get("report_dir"), safety_backup=params.get("safety_backup", True) is not False,
            timeout=params.get("timeout") or 3600, confirm=params.get("confirm") or "",
            backup_dir=params.get("backup_dir") or "/var/backups/postgresql", notifier=Notifier.from_params(params),
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def utc_text(text: str | None) -> dt.datetime | None:
    """A timestamp written with ``to_char(... AT TIME ZONE 'UTC', UTC_TEXT)`` (None stays None)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc) if text else None


class _Sql:
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
            env["PGHOST"] = self.conn.libpq_host  # a socket directory: see _Pitr.route
        try:
            done = procs.run([self.psql or "psql", "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-c", wrapped],
                             env=env, user=self.owner, timeout=self.conn.connect_timeout + 120)
        except procs.ProcessFailed as exc:
            raise PgError(f"psql as the OS user {self.owner} on {self.conn.where}: "
                          f"{' '.join(exc.stderr.split())[-400:] or exc}") from None
        return json.loads(done.stdout.strip() or "[]")


class _Pitr:
    def __init__(self, job: PitrJob, echo: IO[str] | None) -> None:
        self.job = job
        self.echo = echo
        self.now = utcnow()
        self.stamp = self.now.strftime(STAMP)
        self.pgbr = PgBackRest(job.config, job.stanza, job.user)
        self.durations: dict[str, float] = {}
        self.warnings: list[str] = []
        self.result: dict[str, Any] = {"changed": False, "stanza": job.stanza}
        self.info_version: str | None = None
        self.line = Lineage(1, {})
        self.t0 = time.monotonic()
        self._routes: dict[PgConn, _Sql] = {}

    # -- small helpers ------------------------------------------------------
    def timed(self, phase: str, started: float) -> None:
        self.durations[phase] = round(self.durations.get(phase, 0.0) + time.monotonic() - started, 3)

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

    def stanza_path(self) -> str:
        conf = read_conf(self.job.config)
        for section in (self.job.stanza, "global"):
            if conf.has_option(section, "pg1-path"):
                return conf.get(section, "pg1-path")
        raise ConfigError(f"{self.job.config} sets no pg1-path for stanza {self.job.stanza!r}: set data_dir.")

    # -- 1. what and where -----------------------------------------------------
    def check_confirmation(self) -> None:
        if self.job.into == "live" and self.job.confirm != self.job.stanza:
            said = f"confirm={self.job.confirm!r} does not match" if self.job.confirm else "no confirmation was given"
            raise ConfigError(f"a point-in-time recovery into the live cluster replaces all of stanza {self.job.stanza!r} "
                              f"and {said}: set confirm={self.job.stanza} (the stanza's name) to go ahead. "
                              "Nothing was touched.")

    def scratch_dir(self) -> str:
        path = self.job.scratch_dir or (self.stanza_path().rstrip("/") + "_pitr_scratch")
        path = os.path.abspath(path)
        live = os.path.realpath(self.job.data_dir or self.stanza_path())
        if os.path.realpath(path) == live:
            raise ConfigError(f"scratch_dir {path} is the live data directory: choose another directory.")
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise ConfigError(f"scratch_dir {path} exists and is not empty: a scratch recovery needs an empty or "
                              f"new directory. A scratch cluster kept earlier is stopped with "
                              f"'pg_ctl -D {path} stop' and then removed. Nothing was touched.")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise ConfigError(f"the parent of scratch_dir, {parent}, does not exist.")
        if len(os.path.join(path, ".s.PGSQL.65535.lock")) > 107:
            raise ConfigError(f"scratch_dir {path} is too long to hold the scratch server's unix socket "
                              "(107 bytes at most): choose a shorter path.")
        return path

    def running(self, data_dir: str) -> bool:
        """``pg_ctl status`` as the cluster's OS user: true whoever may log in (root is refused by peer auth)."""
        return self.as_owner([self.pg_ctl(), "status", "-D", data_dir], timeout=60, check=False).status == 0

    def route(self, conn: PgConn, log: RunLog) -> _Sql:
        """How this run queries ``conn``'s server: its options, else psql as the cluster's OS user on its socket."""
        if conn in self._routes:
            return self._routes[conn]
        direct = _Sql(conn)
        try:
            direct.query("SELECT 1 AS ok")
            self._routes[conn] = direct
            return direct
        except DoctorqError as exc:
            refused = exc
        if conn.host and not conn.host.startswith("/") and not conn.unix_socket:
            raise refused  # TCP: the OS user gets no further than we do
        owner = _Sql(conn, self.job.user, self.tool("psql"))
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

    # -- 2./3. window ------------------------------------------------------------
    def seal(self, log: RunLog) -> None:
        """A commit now and every WAL up to it archived: targets up to now become reachable."""
        started = time.monotonic()
        try:
            sql = self.route(self.job.conn, log)
            # Two commits: a time target stops before the first commit after it, so the second one makes the
            # first (now) reachable even on an idle cluster.
            (first,) = sql.query(f"SELECT txid_current() AS xid, to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                 f"'{UTC_TEXT}') AS at")
            time.sleep(0.01)
            sql.query("SELECT txid_current() AS xid")
            log(f"Sealed the window: transaction {first['xid']} committed just after {iso_us(utc_text(first['at']))}")
        except DoctorqError as exc:  # a read-only (standby) server, a user without rights...
            warning = f"could not seal the window with a commit ({exc}); it ends at the newest archived commit"
            self.warnings.append(warning)
            log(f"WARNING: {warning}")
        try:
            for line in self.pgbr.check():
                log(f"pgbackrest: {line}")
            log("WAL up to now is archived (pgbackrest check passed)")
        except PgBackRestError as exc:
            warning = f"pgbackrest check failed, so the newest WAL may not be archived: {exc}"
            self.warnings.append(warning)
            log(f"WARNING: {warning}")
        self.timed("seal", started)

    def window(self, info: StanzaInfo, log: RunLog) -> Window:
        started = time.monotonic()
        end = last_archived_commit(self.pgbr, info, bin_dir=self.job.conn.bin_dir)
        self.line = lineage(self.pgbr, info)
        window = window_of(info, end, self.job.backup_set, self.line)
        self.timed("window", started)
        usable = [b for b in info.usable() if self.line.on_it(b)]
        log(f"Recoverable window: {window.describe()} ({len(usable)} backup(s) on timeline {self.line.latest}'s line, "
            f"WAL {info.archive_min}..{info.archive_max})")
        self.result["window"] = window.summary()
        return window

    def check_target(self, window: Window) -> dt.datetime | None:
        job = self.job
        if window.start is None:
            raise ConfigError(f"stanza {job.stanza!r} has no usable backup: take one "
                              "(pgbackrest_backup kind=physical_full) first. Nothing was touched.")
        if job.target != "time":
            return None
        when = job.target_time or window.end
        if when is None:
            raise ConfigError("the end of the recoverable window is unknown (no commit found in the newest archived WAL): "
                              "use target=end or target=immediate. Nothing was touched.")
        if not window.contains(when):
            side = "before the oldest backup finished" if when < window.start else "after the newest archived commit"
            raise ConfigError(f"target_time {iso_us(when)} is outside the recoverable window {window.describe()} "
                              f"({side}): choose a time inside it"
                              + (", or target=end for everything archived" if when > window.start else "")
                              + ". Nothing was touched.")
        return when

    def pick_set(self, info: StanzaInfo, when: dt.datetime | None) -> tuple[str, bool]:
        """The backup to start from, and whether it lies off the newest timeline's line.

        pgBackRest would pick the newest backup that ended before the target
        whatever its timeline; after a point-in-time recovery that can be a
        backup of the abandoned branch, from which the newest timeline cannot
        be reached ("could not locate required checkpoint record").
        """
        job, line = self.job, self.line
        if job.backup_set:
            chosen = info.find(job.backup_set)
            if line.on_it(chosen):
                return chosen.label, False
            if job.target != "immediate":
                raise ConfigError(f"backup set {chosen.label} was taken on timeline {chosen.timeline} after the newest "
                                  f"timeline {line.latest} branched off it (a point-in-time recovery since): only "
                                  "target=immediate restores it (its own state); omit backup_set to recover "
                                  f"along timeline {line.latest}. Nothing was touched.")
            return chosen.label, True
        candidates = [b for b in info.usable() if line.on_it(b) and (when is None or b.consistent_from <= when)]
        if not candidates:
            raise ConfigError(f"no backup of stanza {job.stanza!r} on timeline {line.latest}'s line ended before "
                              f"{iso_us(when) if when else 'now'}. Nothing was touched.")
        return candidates[-1].label, False

    # -- 4. restore ------------------------------------------------------------------
    def restore_options(self, when: dt.datetime | None, data_dir: str, backup_set: str | None = None,
                        off_line: bool = False) -> list[str]:
        job = self.job
        opts = {"time": ["--type=time", f"--target={pg_time(when)}"] if when else [],
                "immediate": ["--type=immediate"], "end": ["--type=default"],
                "name": ["--type=name", f"--target={job.target_name}"]}[job.target]
        if job.target != "end":
            opts.append("--target-action=promote")
        if backup_set:
            opts.append(f"--set={backup_set}")
        if off_line:
            # pgBackRest allows --target-timeline only with a target; the recovery setting itself always works
            opts.append("--recovery-option=recovery_target_timeline=current")
        opts.append(f"--pg1-path={data_dir}")
        if job.into == "live":
            opts += ["--delta", "--link-all"]
        else:
            # archiving off: a scratch cluster must never push its new timeline into the repository;
            # tablespaces must never land on the live cluster's paths
            opts += ["--archive-mode=off", f"--tablespace-map-all={data_dir}.tablespaces"]
        return opts

    def restore(self, when: dt.datetime | None, data_dir: str, chosen: tuple[str, bool], log: RunLog) -> str | None:
        started = time.monotonic()
        opts = self.restore_options(when, data_dir, *chosen)
        log(f"pgbackrest restore {' '.join(opts)}")
        proc = self.pgbr.run("restore", *opts, timeout=self.job.timeout)
        used = None
        for line in self.pgbr.progress(proc):
            match = re.search(r"restore backup set (\S+)", line)
            if match:
                used = match.group(1).rstrip(",")
            if "restore file" not in line:
                log(f"pgbackrest: {line}")
        self.timed("restore", started)
        return used

    # -- the server ----------------------------------------------------------------
    def pg_ctl(self) -> str:
        return self.tool("pg_ctl")

    def tool(self, name: str) -> str:
        """A program of the cluster's PostgreSQL major (its PG_VERSION), else of the repository's."""
        major = None
        data = self.job.data_dir or self.stanza_path()
        try:
            with open(os.path.join(data, "PG_VERSION"), encoding="ascii") as handle:
                major = handle.read().strip()
        except OSError:
            pass
        return pg_bin(name, major or self.info_version, self.job.conn.bin_dir)

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

    def start_scratch(self, data_dir: str, port: int, log: RunLog) -> str:
        """A private server on the scratch copy: unix socket in the data directory, never TCP, archiving off."""
        started = time.monotonic()
        if not os.path.exists(os.path.join(data_dir, "postgresql.conf")):
            # Debian keeps postgresql.conf in /etc/postgresql: the copy has only postgresql.auto.conf
            self._write_owned(os.path.join(data_dir, "postgresql.conf"), "# scratch cluster of doctorq.backup\n")
        hba = os.path.join(data_dir, f"{SCRATCH_MARK}_hba.conf")
        self._write_owned(hba, "# scratch cluster: only local connections, through a socket in its 0700 data directory\n"
                               "local all all trust\n")
        self._write_owned(os.path.join(data_dir, SCRATCH_MARK), json.dumps({"stanza": self.job.stanza, "port": port,
                                                                            "created": iso(self.now)}) + "\n")
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

    def _write_owned(self, path: str, text: str) -> None:
        write_file_atomic(path, text.encode(), mode=0o600)
        self.chown(path)

    def wait_promoted(self, conn: PgConn, data_dir: str, server_log: str | None, log: RunLog) -> _Sql:
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

    def verify(self, sql: _Sql, when: dt.datetime | None, log: RunLog) -> dict[str, Any]:
        """The recovered cluster is out of recovery, did not replay past the target, and every database answers."""
        started = time.monotonic()
        (facts,) = sql.query(
            "SELECT pg_is_in_recovery() AS in_recovery, "
            f"to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', '{UTC_TEXT}') AS point, "
            "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS timeline, current_setting('server_version') AS version")
        in_recovery, point, timeline, version = (facts["in_recovery"], utc_text(facts["point"]), facts["timeline"],
                                                 facts["version"])
        names = sorted(r["datname"] for r in sql.query("SELECT datname FROM pg_database WHERE datallowconn "
                                                       "AND NOT datistemplate"))
        databases = {}
        for name in names:
            databases[name] = sql.query(
                "SELECT count(*) AS tables FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%'", db=name)[0]["tables"]
        facts = {"in_recovery": in_recovery, "recovery_point": iso_us(point) if point else None,
                 "timeline": int(timeline, 16), "server_version": version, "databases": databases}
        if in_recovery:
            raise IntegrityError("the recovered cluster is still in recovery: it did not promote.")
        if when is not None and point is not None and point > when:
            raise IntegrityError(f"the recovered cluster replayed a transaction of {iso_us(point)}, after the target "
                                 f"{iso_us(when)}: the recovery overshot; do not use it.")
        log(f"Verified: out of recovery on timeline {facts['timeline']}, last replayed transaction "
            f"{facts['recovery_point'] or 'none (no transaction after the backup)'}, {len(databases)} database(s) answer "
            f"({', '.join(f'{k}: {v} tables' for k, v in databases.items())})")
        self.timed("verify", started)
        return facts

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

    # -- the run -------------------------------------------------------------------
    def run(self, check_mode: bool) -> dict[str, Any]:
        job = self.job
        mode = "drill" if job.drill else job.into
        frame = Frame(title=f"Point-in-time recovery of stanza {job.stanza!r} into {mode}"
                      + (" (check mode: nothing is changed)" if check_mode else ""),
                      notifier=job.notifier, echo=self.echo,
                      log_path=None if check_mode else os.path.join(job.backup_dir,
                                                                    f"restore_pgbackrest-{job.stanza}_{self.stamp}.log"),
                      prepare=None if check_mode else lambda: makedirs_owned(job.backup_dir),
                      lock_path=None if check_mode else lock_path(job.backup_dir, f"pgbackrest-{job.stanza}"),
                      lock_what=f"a physical backup or recovery of stanza {job.stanza!r}",
                      audit_dir=None if check_mode else job.backup_dir, result=self.result, warnings=self.warnings)

        def conclude(status: str, error: str | None) -> Conclusion:
            rto = round(time.monotonic() - self.t0, 3)
            self.result.update(durations=self.durations, duration_s=rto, log_file=self.result.get("log_file"), mode=mode)
            return Conclusion(event={}) if check_mode else self._conclusion(status, error, rto, frame.log)

        return frame.run(self._plan if check_mode else self._run, conclude, notify=not check_mode)

    def _plan(self, log: RunLog) -> None:
        job = self.job
        info = self.pgbr.info()
        self.info_version = info.pg_version
        window = self.window(info, log)
        when = self.check_target(window)
        chosen = self.pick_set(info, when)
        plan: dict[str, Any] = {"target": job.target, "target_time": iso_us(when) if when else None,
                                "target_name": job.target_name, "backup_set": chosen[0], "into": job.into,
                                "drill": job.drill, "window": window.summary()}
        if job.into == "live":
            plan.update(data_dir=job.data_dir or self.stanza_path(), confirmation_ok=job.confirm == job.stanza,
                        service=job.service, safety_backup=job.safety_backup, delta=True)
        else:
            plan.update(scratch_dir=self.scratch_dir(), scratch_port=job.scratch_port or "a free port",
                        keep_scratch=job.keep_scratch)
        plan["restore_options"] = self.restore_options(when, plan.get("data_dir") or plan.get("scratch_dir"), *chosen)
        self.result.update(plan=plan, changed=True)
        log(f"Plan: {json.dumps(plan, sort_keys=True)}")

    def _run(self, log: RunLog) -> None:
        job = self.job
        self.check_confirmation()
        data_dir = os.path.abspath(job.data_dir or self.stanza_path()) if job.into == "live" else self.scratch_dir()
        if job.into == "live" and not job.service and not os.path.exists(os.path.join(data_dir, "postgresql.conf")) \
                and os.path.exists(os.path.join(data_dir, "PG_VERSION")):
            raise ConfigError(f"{data_dir} has no postgresql.conf (Debian keeps it in /etc/postgresql), so pg_ctl cannot "
                              "start it: set service to the cluster's systemd unit, e.g. postgresql@15-main. "
                              "Nothing was touched.")
        if job.into == "live":
            up = self.running(data_dir)
            log(f"The live server on {data_dir} is {'up' if up else 'not running'} (pg_ctl status as {job.user})")
            if up:
                self.reachable(data_dir, log)
        else:
            try:
                self.route(job.conn, log)
                up = True
            except DoctorqError as exc:
                up = False
                log(f"The live server at {job.conn.where} is not answering ({exc}): the window ends at the newest "
                    "archived commit")
        if up:
            self.seal(log)
        info = self.pgbr.info()
        self.info_version = info.pg_version
        window = self.window(info, log)
        when = self.check_target(window)
        chosen = self.pick_set(info, when)
        self.result["pitr"] = {"target": job.target, "target_time": iso_us(when) if when else None,
                               "target_name": job.target_name, "into": job.into, "data_dir": data_dir,
                               "backup_set": chosen[0], "timeline": self.line.latest if not chosen[1] else None}
        log(f"Target: {job.target}" + (f" {iso_us(when)}" if when else "") + (f" {job.target_name}" if job.target_name else "")
            + f", from backup {chosen[0]}" + (" along its own timeline" if chosen[1] else f" along timeline {self.line.latest}"))
        if job.into == "live":
            self._live(data_dir, when, chosen, up, log)
        else:
            self._scratch(data_dir, when, chosen, log)

    def reachable(self, data_dir: str, log: RunLog) -> None:
        """A running live server this run cannot query is refused: no safety backup, no sealed window, no verification."""
        job = self.job
        try:
            self.route(job.conn, log)
        except DoctorqError as exc:
            raise ConfigError(
                f"PostgreSQL runs on {data_dir} but this run cannot log in to it ({exc}). Without a login there is no "
                "safety backup of the current state and no verification, so the recovery does not start: set "
                "login_unix_socket to the server's socket directory (e.g. /var/run/postgresql) and login_port, with "
                f"login_user (and login_password) of a superuser, or run as the database OS user (become_user: "
                f"{job.user}). Nothing was touched.") from None

    def _live(self, data_dir: str, when: dt.datetime | None, chosen: tuple[str, bool], up: bool, log: RunLog) -> None:
        job = self.job
        if not up and job.safety_backup:
            warning = (f"PostgreSQL is not running on {data_dir}, so no safety backup of its current state was taken "
                       "(pgBackRest backs up a running server only): what the data directory holds now is replaced")
            self.warnings.append(warning)
            log(f"WARNING: {warning}")
        elif up and not job.safety_backup:
            log("No safety backup of the current state (safety_backup=false)")
        if up and job.safety_backup:
            started = time.monotonic()
            log("Safety backup of the current state before it is replaced (pgbackrest backup --type=incr)...")
            before = {b.label for b in self.pgbr.info().backups}
            self.pgbr.run("backup", "--type=incr", timeout=job.timeout)
            made = [b.label for b in self.pgbr.info().backups if b.label not in before]
            self.result["safety_backup"] = made[-1] if made else None
            log(f"Safety backup {self.result['safety_backup']} taken: the state before this recovery stays recoverable "
                "(target=immediate with backup_set, or the old timeline's WAL)")
            self.timed("safety_backup", started)
        self.stop_live(data_dir, log)
        self.result["changed"] = True
        self.restore(when, data_dir, chosen, log)
        server_log = self.start_live(data_dir, log)
        sql = self.wait_promoted(job.conn, data_dir, server_log, log)
        self.result["recovery"] = self.verify(sql, when, log)
        log("=" * 41)
        log("POINT-IN-TIME RECOVERY COMPLETED SUCCESSFULLY")
        log("=" * 41)
        log("Take a full backup soon (pgbackrest_backup kind=physical_full): the cluster is on a new timeline")

    def _scratch(self, data_dir: str, when: dt.datetime | None, chosen: tuple[str, bool], log: RunLog) -> None:
        job = self.job
        port = job.scratch_port or free_port()
        created = not os.path.exists(data_dir)
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.chown(data_dir)
        os.chmod(data_dir, 0o700)
        self.result["changed"] = True
        conn = PgConn(unix_socket=data_dir, port=port, user=job.conn.user, db="postgres",
                      connect_timeout=job.conn.connect_timeout, bin_dir=job.conn.bin_dir)
        keep = job.keep_scratch
        try:
            self.restore(when, data_dir, chosen, log)
            server_log = self.start_scratch(data_dir, port, log)
            sql = self.wait_promoted(conn, data_dir, server_log, log)
            self.result["recovery"] = self.verify(sql, when, log)
        except BaseException:
            keep = False
            raise
        finally:
            self.result["scratch"] = {"data_dir": data_dir, "port": port, "socket_dir": data_dir, "kept": keep,
                                      "connect": f"psql -h {data_dir} -p {port} -U {job.conn.user} postgres",
                                      "stop": f"pg_ctl -D {data_dir} stop" if keep else None}
            if not keep:
                self.stop_scratch(data_dir, log, remove=True)
                if not created:  # it was an empty directory of the user's: leave it so
                    os.makedirs(data_dir, mode=0o700, exist_ok=True)
                    self.chown(data_dir)
        if keep:
            log(f"Scratch cluster running: {self.result['scratch']['connect']} (stop it with "
                f"{self.result['scratch']['stop']}, then remove {data_dir})")

    # -- report --------------------------------------------------------------------------
    def _conclusion(self, status: str, error: str | None, rto: float, log: RunLog) -> Conclusion:
        """The run's audit line and webhook; a drill's report and metrics, and its verdict on the recovery point."""
        job = self.job
        recovery = self.result.get("recovery") or {}
        point = recovery.get("recovery_point")
        rpo = None
        if point:
            reached = dt.datetime.fromisoformat(point.replace("Z", "+00:00"))
            rpo = round(max(0.0, (self.now - reached).total_seconds()), 3)
        metrics = None
        if job.drill:
            if status == "success" and rpo is None:
                status, error = "failure", "the drill recovered no transaction: the recovery point is unknown."
            elif status == "success" and job.max_rpo_seconds and rpo > job.max_rpo_seconds:
                status, error = "failure", (f"the newest recoverable transaction is {rpo:.0f}s old, more than "
                                            f"max_rpo_seconds={job.max_rpo_seconds}: check WAL archiving "
                                            "(pgbackrest check) and archive_timeout.")
            self.result.update(rto_s=rto, rpo_s=rpo)
            metrics = samples(status, rto, rto_seconds=rto, rpo_seconds=rpo or 0.0)
            log(f"PITR drill of stanza {job.stanza}: {status}; RTO {rto:.1f}s, recovery point {point or 'n/a'}"
                + (f", RPO {rpo:.1f}s" if rpo is not None else "") + (f" ({error})" if error else ""))
            self._write_report(status, error, rto, rpo)
        summary = (f"{'PITR drill' if job.drill else 'Point-in-time recovery'} of stanza {job.stanza} on "
                   f"{socket.gethostname()} into {job.into}: {status}" + (f" ({error})" if error else f", RTO {rto:.0f}s"))
        return Conclusion(
            event={"event": "drill" if job.drill else "restore", "status": status, "database": metrics_label(job.stanza),
                   "host": socket.gethostname(), "summary": summary, "error": error, "pitr": self.result.get("pitr"),
                   "recovery": recovery or None, "rto_s": rto, "rpo_s": rpo},
            metrics=metrics, metrics_job="drill", metrics_label=metrics_label(job.stanza),
            audit={"at": iso(self.now), "finished_at": iso(utcnow()), "database": metrics_label(job.stanza),
                   "mode": f"pitr_{'drill' if job.drill else job.into}", "source": self.result.get("pitr"),
                   "error": error, "safety_backup": self.result.get("safety_backup"), "durations": self.durations},
            status=status, error=error)

    def _write_report(self, status: str, error: str | None, rto: float, rpo: float | None) -> None:
        """The drill report: returned as ``report`` (the drill role's summary) and written to ``report_dir``."""
        job = self.job
        pitr = self.result.get("pitr") or {}
        recovery = self.result.get("recovery") or {}
        report = {"stanza": job.stanza, "host": socket.gethostname(), "at": iso(self.now), "status": status,
                  "error": error, "kind": "pitr", "backup_id": pitr.get("backup_set"),
                  "recovery_point": recovery.get("recovery_point"), "pitr": self.result.get("pitr"),
                  "window": self.result.get("window"), "recovery": self.result.get("recovery"), "rto_s": rto,
                  "rpo_s": rpo, "durations": self.durations}
        self.result["report"] = report
        if not job.report_dir:
            return
        path = os.path.join(job.report_dir, f"drill_pgbackrest-{job.stanza}.json")
        try:
            os.makedirs(job.report_dir, mode=0o750, exist_ok=True)
            write_file_atomic(path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), mode=0o640)
            self.result["report_file"] = path
        except (OSError, DoctorqError) as exc:
            self.warnings.append(f"cannot write the drill report {path}: {exc}")


def run_pitr(job: PitrJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """Recover the cluster to a point in time (live or scratch, or a drill). ``failed``/``msg`` on failure."""
    return _Pitr(job, echo).run(check_mode)
