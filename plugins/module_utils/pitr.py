# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery of a whole cluster with pgBackRest (``pg_pitr_restore``): the job.

The run frame, the sealed window, the safety backup, the steps in order,
the verification and the report live here; the options in
``pitr_options``, the plan (where, the target against the window, the backup
set) in ``pitr_plan``, the clusters' control (pg_ctl/systemd as the
cluster's OS user) in ``pitr_cluster``.

Order of a run, and why:
1. check the options and the confirmation before any slow work;
2. a drill first measures what a disaster would lose now, before it
   commits or switches anything (``pitr_exposure``: its honest RPO);
   then, when the server answers, seal the window: one commit now, then
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
6. a drill also measures RTO, judges the exposure of step 2 against
   ``drill.max_rpo_seconds``, writes its report and metrics, and removes the
   scratch cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, IntegrityError, PgBackRestError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import PgBackRest, metrics_label
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import Lineage, StanzaInfo
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_cluster import Cluster, Sql, free_port
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_exposure import Exposure, measure_exposure
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_plan import (
    check_confirmation, check_live_dir, check_target, describe_target, live_dir, pick_set, restore_options, scratch_dir, target_facts,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import Window, iso_us, last_archived_commit, lineage, window_of
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import makedirs_owned
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog

# A timestamp as text PITR can compare to the microsecond, whichever way the query went.
UTC_TEXT = "YYYY-MM-DD\"T\"HH24:MI:SS.US"


def utc_text(text: str | None) -> dt.datetime | None:
    """A timestamp written with ``to_char(... AT TIME ZONE 'UTC', UTC_TEXT)`` (None stays None)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc) if text else None


class _Pitr:
    """One run: the frame around the steps, live or scratch, and the conclusion (audit, webhook, drill report)."""

    def __init__(self, job: PitrJob, echo: IO[str] | None) -> None:
        self.job = job
        self.echo = echo
        self.now = utcnow()
        self.stamp = self.now.strftime(STAMP)
        self.pgbr = PgBackRest(job.config, job.stanza, job.user)
        self.durations: dict[str, float] = {}
        self.warnings: list[str] = []
        # whose recovery it is (docs/DESIGN.md, "Words"); stanza: its key of before, until 1.0.0
        self.source = {"name": job.stanza, "source_type": "stanza"}
        self.result: dict[str, Any] = {"changed": False, **self.source, "stanza": job.stanza}
        self.line = Lineage(1, {})
        self.t0 = time.monotonic()
        self.cluster = Cluster(job, self.durations)
        self.exposure: Exposure | None = None

    def timed(self, phase: str, started: float) -> None:
        self.cluster.timed(phase, started)

    # -- 2./3. exposure, window -----------------------------------------------------
    def measure(self, up: bool, log: RunLog) -> None:
        """A drill's honest RPO: the archive's lag now, before this run commits or switches anything."""
        started = time.monotonic()
        sql = None
        if up:
            try:
                sql = self.cluster.route(self.job.conn, log)
            except DoctorqError:
                sql = None
        self.exposure = measure_exposure(self.pgbr, self.pgbr.info(), sql, self.now, bin_dir=self.job.conn.bin_dir)
        self.result["exposure"] = self.exposure.summary()
        log(f"Exposure at the drill's start (what a disaster then would lose): {self.exposure.describe()}")
        self.timed("exposure", started)

    def seal(self, log: RunLog) -> None:
        """A commit now and every WAL up to it archived: targets up to now become reachable."""
        started = time.monotonic()
        try:
            sql = self.cluster.route(self.job.conn, log)
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

    # -- the run -------------------------------------------------------------------
    def run(self, check_mode: bool) -> dict[str, Any]:
        job = self.job
        mode = "drill" if job.drill else job.into
        frame = Frame(title=f"Point-in-time recovery of stanza {job.stanza!r} into {mode}"
                      + (" (check mode: nothing is changed)" if check_mode else ""),
                      notifier=job.notifier, echo=self.echo,
                      log_path=None if check_mode else os.path.join(job.log_dir,
                                                                    f"restore_pgbackrest-{job.stanza}_{self.stamp}.log"),
                      prepare=None if check_mode else lambda: makedirs_owned(job.log_dir),
                      lock_path=None if check_mode else lock_path(job.log_dir, f"pgbackrest-{job.stanza}"),
                      lock_what=f"a physical backup or recovery of stanza {job.stanza!r}",
                      audit_dir=None if check_mode else job.log_dir, result=self.result, warnings=self.warnings)

        def conclude(status: str, error: str | None) -> Conclusion:
            rto = round(time.monotonic() - self.t0, 3)
            self.result.update(durations=self.durations, duration_s=rto, log_file=self.result.get("log_file"), mode=mode)
            return Conclusion(event={}) if check_mode else self._conclusion(status, error, rto, frame.log)

        return frame.run(self._plan if check_mode else self._run, conclude, notify=not check_mode)

    def _plan(self, log: RunLog) -> None:
        job = self.job
        info = self.pgbr.info()
        self.cluster.info_version = info.pg_version
        window = self.window(info, log)
        when = check_target(job, window)
        chosen = pick_set(job, info, self.line, when)
        plan: dict[str, Any] = {**target_facts(job, when), "backup_set": chosen[0], "into": job.into,
                                "drill": job.drill, "window": window.summary()}
        if job.into == "live":
            plan.update(data_dir=live_dir(job), confirmation_ok=job.confirm == job.stanza,
                        service=job.service, safety_backup=job.safety_backup, delta=True)
        else:
            plan.update(scratch_dir=scratch_dir(job), scratch_port=job.scratch_port or "a free port",
                        keep_scratch=job.keep_scratch)
        plan["restore_options"] = restore_options(job, when, plan.get("data_dir") or plan.get("scratch_dir"), *chosen)
        self.result.update(plan=plan, changed=True)
        log(f"Plan: {json.dumps(plan, sort_keys=True)}")

    def _run(self, log: RunLog) -> None:
        job = self.job
        check_confirmation(job)
        data_dir = os.path.abspath(live_dir(job)) if job.into == "live" else scratch_dir(job)
        if job.into == "live":
            check_live_dir(job, data_dir)
            up = self.cluster.running(data_dir)
            log(f"The live server on {data_dir} is {'up' if up else 'not running'} (pg_ctl status as {job.user})")
            if up:
                self.reachable(data_dir, log)
        else:
            try:
                self.cluster.route(job.conn, log)
                up = True
            except DoctorqError as exc:
                up = False
                log(f"The live server at {job.conn.where} is not answering ({exc}): the window ends at the newest "
                    "archived commit")
        if job.drill:
            self.measure(up, log)
        if up:
            self.seal(log)
        info = self.pgbr.info()
        self.cluster.info_version = info.pg_version
        window = self.window(info, log)
        when = check_target(job, window)
        chosen = pick_set(job, info, self.line, when)
        self.result["pitr"] = {**target_facts(job, when), "into": job.into, "data_dir": data_dir,
                               "backup_set": chosen[0], "timeline": self.line.latest if not chosen[1] else None}
        log(f"Target: {describe_target(job, when)}, from backup {chosen[0]}"
            + (" along its own timeline" if chosen[1] else f" along timeline {self.line.latest}"))
        if job.into == "live":
            self._live(data_dir, when, chosen, up, log)
        else:
            self._scratch(data_dir, when, chosen, log)

    def restore(self, when: dt.datetime | None, data_dir: str, chosen: tuple[str, bool], log: RunLog) -> str | None:
        started = time.monotonic()
        opts = restore_options(self.job, when, data_dir, *chosen)
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

    def reachable(self, data_dir: str, log: RunLog) -> None:
        """A running live server this run cannot query is refused: no safety backup, no sealed window, no verification."""
        job = self.job
        try:
            self.cluster.route(job.conn, log)
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
            log("No safety backup of the current state (live.safety_backup=false)")
        if up and job.safety_backup:
            started = time.monotonic()
            log("Safety backup of the current state before it is replaced (pgbackrest backup --type=incr)...")
            before = {b.id for b in self.pgbr.info().backups}
            self.pgbr.run("backup", "--type=incr", timeout=job.timeout)
            made = [b.id for b in self.pgbr.info().backups if b.id not in before]
            self.result["safety_backup"] = made[-1] if made else None
            log(f"Safety backup {self.result['safety_backup']} taken: the state before this recovery stays recoverable "
                "(target.immediate with target.backup_set, or the old timeline's WAL)")
            self.timed("safety_backup", started)
        self.cluster.stop_live(data_dir, log)
        self.result["changed"] = True
        self.restore(when, data_dir, chosen, log)
        server_log = self.cluster.start_live(data_dir, log)
        sql = self.cluster.wait_promoted(job.conn, data_dir, server_log, log)
        self.result["recovery"] = self.verify(sql, when, log)
        log("=" * 41)
        log("POINT-IN-TIME RECOVERY COMPLETED SUCCESSFULLY")
        log("=" * 41)
        log("Take a full backup soon (pgbackrest_backup level=full): the cluster is on a new timeline")

    def _scratch(self, data_dir: str, when: dt.datetime | None, chosen: tuple[str, bool], log: RunLog) -> None:
        job = self.job
        port = job.scratch_port or free_port()
        created = not os.path.exists(data_dir)
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.cluster.chown(data_dir)
        os.chmod(data_dir, 0o700)
        self.result["changed"] = True
        conn = PgConn(unix_socket=data_dir, port=port, user=job.conn.user, db="postgres",
                      connect_timeout=job.conn.connect_timeout, bin_dir=job.conn.bin_dir)
        keep = job.keep_scratch
        try:
            self.restore(when, data_dir, chosen, log)
            server_log = self.cluster.start_scratch(data_dir, port, iso(self.now), log)
            sql = self.cluster.wait_promoted(conn, data_dir, server_log, log)
            self.result["recovery"] = self.verify(sql, when, log)
        except BaseException:
            keep = False
            raise
        finally:
            self.result["scratch"] = {"data_dir": data_dir, "port": port, "socket_dir": data_dir, "kept": keep,
                                      "connect": f"psql -h {data_dir} -p {port} -U {job.conn.user} postgres",
                                      "stop": f"pg_ctl -D {data_dir} stop" if keep else None}
            if not keep:
                self.cluster.stop_scratch(data_dir, log, remove=True)
                if not created:  # it was an empty directory of the user's: leave it so
                    os.makedirs(data_dir, mode=0o700, exist_ok=True)
                    self.cluster.chown(data_dir)
        if keep:
            log(f"Scratch cluster running: {self.result['scratch']['connect']} (stop it with "
                f"{self.result['scratch']['stop']}, then remove {data_dir})")

    def verify(self, sql: Sql, when: dt.datetime | None, log: RunLog) -> dict[str, Any]:
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

    # -- report --------------------------------------------------------------------------
    def _conclusion(self, status: str, error: str | None, rto: float, log: RunLog) -> Conclusion:
        """The run's audit line and webhook; a drill's report and metrics, and its verdict on the recovery point."""
        job = self.job
        recovery = self.result.get("recovery") or {}
        point = recovery.get("recovery_point")
        exposure = self.exposure
        rpo = exposure.seconds if exposure else None  # the honest RPO: the archive's lag at the drill's start
        metrics = None
        if job.drill:
            if status == "success" and point is None:
                status, error = "failure", "the drill recovered no transaction: the recovery point is unknown."
            elif status == "success" and rpo is None:
                status, error = "failure", ("the exposure is unknown: no commit was found in the newest archived WAL "
                                            f"and no usable backup is listed (pgbackrest info --stanza={job.stanza}), so nothing proves what a disaster "
                                            "would lose: check WAL archiving (pgbackrest check).")
            elif status == "success" and job.max_rpo_seconds and rpo > job.max_rpo_seconds:
                status, error = "failure", (f"a disaster at the drill's start would have lost {rpo:.0f}s of transactions "
                                            f"({exposure.describe()}), more than drill.max_rpo_seconds="
                                            f"{job.max_rpo_seconds}: check WAL archiving (pgbackrest check, "
                                            "archive_command, pg_stat_archiver) and archive_timeout.")
            self.result.update(rto_s=rto, rpo_s=rpo)
            # measured whatever the outcome, so a drill failed by its exposure reports it (DoctorqPitrArchiveLagOverLimit)
            measured = {**({"rpo_limit_seconds": job.max_rpo_seconds} if job.max_rpo_seconds else {}),
                        **({"rpo_seconds": rpo, "archive_lag_seconds": rpo} if rpo is not None else {})}
            metrics = samples(status, rto, measured, rto_seconds=rto)
            log(f"PITR drill of stanza {job.stanza}: {status}; RTO {rto:.1f}s, exposure (RPO) "
                + (f"{rpo:.1f}s" if rpo is not None else "unknown") + f", recovery point reached {point or 'n/a'}"
                + (f" ({error})" if error else ""))
            self._write_report(status, error, rto, rpo)
        summary = (f"{'PITR drill' if job.drill else 'Point-in-time recovery'} of stanza {job.stanza} on "
                   f"{socket.gethostname()} into {job.into}: {status}" + (f" ({error})" if error else f", RTO {rto:.0f}s"))
        return Conclusion(
            # database: the key of before, until 1.0.0
            event={"event": "drill" if job.drill else "restore", "status": status, **self.source,
                   "id": (self.result.get("pitr") or {}).get("backup_set"), "database": metrics_label(job.stanza),
                   "host": socket.gethostname(), "summary": summary, "error": error, "pitr": self.result.get("pitr"),
                   "recovery": recovery or None, "rto_s": rto, "rpo_s": rpo},
            metrics=metrics, metrics_job="drill", metrics_label=metrics_label(job.stanza),
            audit={"at": iso(self.now), "finished_at": iso(utcnow()), **self.source,
                   "database": metrics_label(job.stanza),
                   "mode": f"pitr_{'drill' if job.drill else job.into}", "source": self.result.get("pitr"),
                   "error": error, "safety_backup": self.result.get("safety_backup"), "durations": self.durations},
            status=status, error=error)

    def _write_report(self, status: str, error: str | None, rto: float, rpo: float | None) -> None:
        """The drill report: returned as ``report`` (the drill role's summary) and written to ``report_dir``."""
        job = self.job
        pitr = self.result.get("pitr") or {}
        recovery = self.result.get("recovery") or {}
        # stanza and kind (pitr): the keys of before, until 1.0.0
        report = {**self.source, "stanza": job.stanza, "kind": "pitr", "host": socket.gethostname(), "at": iso(self.now),
                  "status": status, "error": error, "backup_id": pitr.get("backup_set"),
                  "recovery_point": recovery.get("recovery_point"), "pitr": self.result.get("pitr"),
                  "window": self.result.get("window"), "recovery": self.result.get("recovery"), "rto_s": rto,
                  "exposure": self.result.get("exposure"),
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
