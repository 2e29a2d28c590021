# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The frame every restore runs in (database and file set): one shape, whatever the outcome.

A restore names its run and does its work; ``RestoreRun`` gives it the rest,
the same for both kinds: its ``Sources`` (restore_source.py), its own run log
in backup_dir, the run frame (runframe.py: signals, failure shape, metrics),
the safety backup through the backup engine, one line in the audit log and
the notification.
"""

from __future__ import annotations

import os
import time
from typing import IO, Any, Callable

from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import Sources, Wording, add_duration
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog


class RestoreRun:
    """One restore run: what every restore keeps, and the frame it runs in.

    A subclass names its run (``log_name``, ``title``), does the work
    (``work``: the result, the durations and the warnings are filled in on
    the way; ``pending`` in the result when an archived object is not back
    yet) and says what its audit line and notification hold
    (``audit_record``, ``event``). The job needs ``backup_dir``, ``s3``,
    ``archive``, ``work_dir``, ``safety_dir`` and ``notifier``.
    """

    def __init__(self, job: Any, echo: IO[str] | None, wording: Wording, result: dict[str, Any]) -> None:
        self.job = job
        self.echo = echo
        self.now = utcnow()
        self.stamp = self.now.strftime(STAMP)
        self.durations: dict[str, float] = {}
        self.warnings: list[str] = []
        self.result = result
        self.sources = Sources(wording, job.backup_dir, job.s3, archive=job.archive, work_dir=job.work_dir,
                               result=self.result, durations=self.durations, warnings=self.warnings)
        self.local = self.sources.local

    # -- what a restore says about itself -----------------------------------------------
    def log_name(self) -> str:
        """The run log's file name in backup_dir (a real run only)."""
        raise NotImplementedError

    def title(self) -> str:
        raise NotImplementedError

    def work(self, log: RunLog, check_mode: bool) -> None:
        raise NotImplementedError

    def audit_record(self) -> dict[str, Any]:
        """What this restore's audit line holds besides the source, outcome, safety backup and durations."""
        raise NotImplementedError

    def event(self, status: str, error: str | None) -> dict[str, Any]:
        """The webhook's event for this run's outcome."""
        raise NotImplementedError

    # -- the frame ----------------------------------------------------------------------
    def timed(self, phase: str, started: float) -> None:
        add_duration(self.durations, phase, started)

    def run(self, check_mode: bool) -> dict[str, Any]:
        """Run ``work`` in the run frame with its own log; a real run, even a failed one, is audited and notified."""
        frame = Frame(title=self.title() + (" (check mode: nothing is changed)" if check_mode else ""),
                      notifier=self.job.notifier, echo=self.echo,
                      log_path=None if check_mode else os.path.join(self.job.backup_dir, self.log_name()),
                      own_log_file=True, audit_dir=None if check_mode else self.job.backup_dir,
                      prepare=None if check_mode else self.local.ensure_writable, result=self.result,
                      warnings=self.warnings)

        def conclude(status: str, error: str | None) -> Conclusion:
            self.result.update(durations=self.durations, duration_s=frame.duration, log_file=self.result.get("log_file"))
            return Conclusion(event=self.event(status, error), audit={
                "at": iso(self.now), "finished_at": iso(utcnow()), "source": self.result.get("source"), "error": error,
                "safety_backup": self.result.get("safety_backup"), "durations": self.durations, **self.audit_record()})

        return frame.run(lambda log: self.work(log, check_mode), conclude, notify=not check_mode)

    def safety_backup(self, what: str, backup: Callable[[str], dict[str, Any]], log: RunLog) -> dict[str, Any]:
        """``backup(safety_dir)``: back up ``what`` the restore replaces, through the backup engine; a failure stops here."""
        started = time.monotonic()
        safety_dir = self.job.safety_dir or os.path.join(self.job.backup_dir, "safety")
        log(f"Creating a safety backup of {what} before the restore: {safety_dir}")
        outcome = backup(safety_dir)
        if outcome.get("failed"):
            raise DoctorqError(f"the safety backup of {what} failed, so nothing was restored: {outcome['msg']}")
        self.timed("safety_backup", started)
        log(f"Safety backup written: {outcome['backup']['path']} ({human(outcome['backup']['size'])})")
        return outcome
