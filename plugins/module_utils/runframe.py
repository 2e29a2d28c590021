# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The frame every job runs in: one place for what each run owes its operator.

A job (a database or file-set backup, a restore, a point-in-time recovery)
hands ``Frame.run`` its work and says how to conclude; the frame

- turns SIGTERM/SIGHUP into an unwinding exception, so temporary files and
  child processes go however the run is stopped (runfiles.signals_raise);
- opens the run log (a directory that cannot hold it is itself a failure that
  is logged in memory, notified and returned, not a traceback);
- takes the lock (``lock_path``: one name per job and target);
- maps every failure to one shape: ``failed``/``msg`` in the result, an
  ``ERROR:`` line in the log; an unexpected exception is a failure too, with
  its type named, never a traceback in cron mail;
- then, whatever the outcome: the conclusion's audit line, webhook and
  metrics (one vocabulary, ``samples``), warnings, and the log closed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import IO, Any, Callable

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import encode_name
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import Terminated, signals_raise
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog, append_audit


def lock_path(directory: str, name: str, job: str = "") -> str:
    """The lock of one job on one target: ``<directory>/.<encoded name>[.<job>].lock``.

    Backups and restores of one database share it (``job`` empty), so they never overlap.
    """
    return os.path.join(directory, f".{encode_name(name)}{'.' + job if job else ''}.lock")


# Every metric a job writes, one vocabulary: ``doctorq_<job>_<metric>{name="<label>",database="<label>"}`` in
# ``<metrics_dir>/doctorq_<job>_<label>.prom`` (notify.write_metrics), one file per job and database or file
# set (``database``: the label's name before docs/DESIGN.md's "Words", until 1.0.0). monitoring/'s alerts and
# dashboard use these names only (tests/unit/test_monitoring.py).
METRIC_JOBS = ("backup", "files_backup", "drill", "files_drill")
METRICS = {
    "last_run_status": "1 when the last run succeeded, 0 when it failed",
    "last_run_timestamp_seconds": "when the last run ended (Unix time)",
    "last_success_timestamp_seconds": "when the last successful run ended (Unix time)",
    "last_duration_seconds": "how long the last successful run took",
    "last_size_bytes": "backups: the size of the last successful backup",
    "last_changed_files": "file-set backups: files that changed while tar read them",
    "last_file_count": "file-set backups: members of the last backup",
    "s3_pending_uploads": "backups with S3: complete local backups S3 lacks, uploaded by the next run that reaches it",
    "rto_seconds": "drills: time to a verified restore",
    "rpo_seconds": "drills: age of the newest restorable backup (PITR: archive_lag_seconds), also when it failed the drill",
    "rpo_limit_seconds": "drills: the RPO over which the drill fails (max_rpo_hours, max_rpo_seconds)",
    "archive_lag_seconds": "PITR drills: what a disaster at the drill's start would lose, the age of the newest commit "
                           "in the archived WAL (0 when nothing committed since), also when it failed the drill",
}


def samples(status: str, duration: float, facts: dict[str, float] | None = None, **on_success: float) -> dict[str, float]:
    """Every job's metrics in the vocabulary of ``METRICS``: the run's status and time; on success its duration.

    ``on_success``: facts of a successful run only (a failed run keeps the
    previous values); ``facts``: what the run measured whatever its outcome
    (a drill's RPO that failed it, its limit, uploads S3 still lacks).
    """
    now = time.time()
    out = {"last_run_status": 1.0 if status == "success" else 0.0, "last_run_timestamp_seconds": now}
    out.update({k: float(v) for k, v in (facts or {}).items()})
    if status == "success":
        out.update(last_success_timestamp_seconds=now, last_duration_seconds=duration,
                   **{k: float(v) for k, v in on_success.items()})
    unknown = sorted(set(out) - set(METRICS))
    if unknown:
        raise ValueError(f"metrics {unknown} are not in runframe.METRICS: add them there (and to monitoring/ if alerted on)")
    return out


@dataclasses.dataclass
class Conclusion:
    """What a run says at its end: the webhook's event, the metrics (``job`` + ``label``) and the audit line.

    ``status``/``error`` overrule the work's outcome when the conclusion
    itself fails the run (a drill whose recovery point is older than its limit).
    """

    event: dict[str, Any]
    metrics: dict[str, float] | None = None
    metrics_job: str = ""
    metrics_label: str = ""
    audit: dict[str, Any] | None = None
    status: str | None = None
    error: str | None = None


@dataclasses.dataclass
class Frame:
    """One run of one job; see the module's docstring."""

    title: str
    notifier: Any  # backup.Notifier: send(event, log), metrics(job, label, samples, log)
    echo: IO[str] | None = None
    log_path: str | None = None  # None: the log stays in memory (check mode)
    own_log_file: bool = False
    lock_path: str | None = None
    lock_what: str = ""
    audit_dir: str | None = None
    prepare: Callable[[], None] | None = None  # e.g. make the backup directory; a failure is the run's failure
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    log: RunLog | None = None  # the run's log, for ``conclude`` to add its own lines

    @property
    def duration(self) -> float:
        return round(time.monotonic() - self.started_at, 3)

    def _open_log(self) -> RunLog:
        if self.prepare:
            self.prepare()
        if not self.log_path:
            return RunLog(echo=self.echo)
        try:
            return RunLog(self.log_path, echo=self.echo, own_file=self.own_log_file)
        except OSError as exc:
            raise StorageError(f"cannot write the run log {self.log_path}: {exc.strerror}; create its directory "
                               "(log_dir or backup_dir) owned by the user running the job, or fix its permissions.") from None

    def run(self, work: Callable[[RunLog], None], conclude: Callable[[str, str | None], Conclusion],
            *, notify: bool = True) -> dict[str, Any]:
        """``work(log)``, then ``conclude(status, error)`` whatever happened; returns ``result``."""
        log = self.log = RunLog(echo=self.echo)  # in memory until the log file opens; a failure there is reported too
        status, error = "success", None
        stopped: Terminated | None = None
        with signals_raise():
            try:
                log = self.log = self._open_log()
                if log.path:
                    self.result["log_file"] = log.path
                log.banner(self.title)
                if self.lock_path:
                    with Lock(self.lock_path, self.lock_what):
                        work(log)
                else:
                    work(log)
                if self.result.get("pending"):
                    status = "pending"
            except DoctorqError as exc:
                status, error = "failure", str(exc)
            except Terminated as exc:
                stopped = exc
                status, error = "failure", (f"the run was {exc} before it finished; nothing it left incomplete is "
                                            "listed or restored, and the next run cleans it up.")
            except Exception as exc:  # pylint: disable=broad-except
                status, error = "failure", (f"internal error ({type(exc).__name__}: {exc}); this is a bug, please "
                                            "report it with the run log. Nothing incomplete is listed as a backup.")
            if error:
                log(f"ERROR: {error}")
                self.result.update(failed=True, msg=error)
            end = conclude(status, error)
            if end.status and end.status != status:
                status = end.status
                if end.error and not self.result.get("failed"):
                    log(f"ERROR: {end.error}")
                    self.result.update(failed=True, msg=end.error)
            self._conclude(end, status, log, notify)
        if stopped is not None:
            raise stopped
        return self.result

    def _conclude(self, end: Conclusion, status: str, log: RunLog, notify: bool) -> None:
        if end.audit is not None and self.audit_dir:
            path, warning = append_audit(self.audit_dir, end.audit.pop("at"), end.audit.pop("finished_at"),
                                         {"status": status, **end.audit})
            if path:
                self.result["audit_file"] = path
            else:
                self.warnings.append(warning)
        if notify:
            self.warnings += self.notifier.send(end.event, log)
            if end.metrics is not None:
                self.warnings += self.notifier.metrics(end.metrics_job, end.metrics_label, end.metrics, log)
        log.close()
        self.result.update(warnings=self.warnings, log=log.lines)
