# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore drills: prove the newest backup restores, and how long it takes.

A drill restores the newest complete backup of a database into a scratch
database through the same restore engine as ``pg_restore_safe`` (so it
verifies checksums and tables the same way), measures RTO (time to a
verified restore) and RPO (age of the newest restorable backup), writes a
JSON report and Prometheus metrics, and drops the scratch database. It never
touches the live database.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.backup import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, iso, parse_iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, quote_ident
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import remove_quietly, write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.restore import MAX_IDENT, RestoreJob, run_restore
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog


@dataclasses.dataclass(frozen=True)
class DrillJob:
    conn: PgConn
    db: str
    backup_dir: str
    s3: s3util.S3Config | None = None
    report_dir: str | None = None
    jobs: int = 1
    max_rpo_hours: float = 26.0
    notifier: Notifier = Notifier(notify_on="failure")


def run_drill(job: DrillJob, *, echo: IO[str] | None = None) -> dict[str, Any]:
    """Drill one database; returns the report (``status`` success/failure); never raises for a failed restore."""
    started = utcnow()
    suffix = f"__drill_{started.strftime(STAMP)}"
    scratch = job.db[:MAX_IDENT - len(suffix)] + suffix
    restore = RestoreJob(conn=dataclasses.replace(job.conn, db=None), db=scratch, source="latest", source_db=job.db, backup_dir=job.backup_dir,
                         s3=job.s3, safety_backup=False, jobs=job.jobs)
    t0 = time.monotonic()
    try:
        outcome = run_restore(restore, echo=echo)
    finally:
        _drop_scratch(job.conn, scratch)
        remove_quietly(os.path.join(job.backup_dir, f".{scratch}.lock"))
    rto = round(time.monotonic() - t0, 3)
    source = outcome.get("source") or {}
    rpo = round((started - parse_iso(source["started_at"])).total_seconds(), 1) if source.get("started_at") else None
    status = "failure" if outcome.get("failed") else "success"
    error = outcome.get("msg")
    if status == "success" and rpo is not None and rpo > job.max_rpo_hours * 3600:
        status, error = "failure", (f"the newest restorable backup is {rpo / 3600:.1f} h old, more than "
                                    f"max_rpo_hours={job.max_rpo_hours}: check that the backups run.")
    report = {
        "database": job.db, "host": socket.gethostname(), "at": iso(started), "status": status, "error": error,
        "backup_id": source.get("id"), "backup_location": source.get("location"), "backup_started_at": source.get("started_at"),
        "backup_size": source.get("size"), "rto_s": rto, "rpo_s": rpo, "tables": outcome.get("tables"),
        "durations": outcome.get("durations"), "scratch_database": scratch,
    }
    warnings = list(outcome.get("warnings") or [])
    if job.report_dir:
        path = os.path.join(job.report_dir, f"drill_{job.db}.json")
        try:
            os.makedirs(job.report_dir, mode=0o750, exist_ok=True)
            write_file_atomic(path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), mode=0o640)
            report["report_file"] = path
        except (OSError, DoctorqError) as exc:
            warnings.append(f"cannot write the drill report {path}: {exc}")
    samples = {"last_run_timestamp_seconds": time.time(), "last_status": 1.0 if status == "success" else 0.0}
    if status == "success":
        samples.update(last_success_timestamp_seconds=time.time(), rto_seconds=rto, rpo_seconds=rpo or 0.0)
    log = RunLog(echo=echo)
    log(f"Drill of {job.db}: {status}; RTO {rto:.1f}s, RPO {'%.0fs' % rpo if rpo is not None else 'n/a'}"
        + (f" ({error})" if error else ""))
    warnings += job.notifier.metrics("drill", job.db, samples, log)
    summary = f"Restore drill of {job.db} on {socket.gethostname()}: {status}" + (f" ({error})" if error else f", RTO {rto:.0f}s")
    warnings += job.notifier.send({"event": "drill", "status": status, "summary": summary, **report}, log)
    report["warnings"] = warnings
    report["log"] = (outcome.get("log") or []) + log.lines
    return report


def _drop_scratch(conn: PgConn, scratch: str) -> None:
    try:
        with PgClient(conn) as pg:
            pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (scratch,), db="postgres")
            pg.query(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}", db="postgres")
    except DoctorqError:
        pass  # reported by the restore itself; a leftover scratch database is named __drill_ and harmless
