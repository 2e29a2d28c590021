# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore drills: prove the newest backup restores, and how long it takes.

A drill restores the newest complete backup into scratch space through the
same restore engine as the modules, so it verifies checksums the same way:

- a database into a scratch database ``<db>__drill_<ts>`` (``pg_restore_safe``'s
  engine: every table of the manifest and its row count checked), dropped
  afterwards;
- a file set into a new, empty scratch directory (``files_restore``'s engine:
  every archive member checked, the tree against the archive and the content
  sample), then the restored tree against the manifest (regular files,
  symlinks, bytes of file data, the recorded SHA-256 sample), removed
  afterwards whatever happened.

Both measure RTO (time to a verified restore) and RPO (age of the newest
restorable backup), write a JSON report and Prometheus metrics, and notify on
failure through one reporting path. A drill never touches live data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from typing import IO, Any, Callable

from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.backup_steps import DatabaseBackups
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, encode_name, iso, parse_iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, LockBusy
from ansible_collections.doctorq.backup.plugins.module_utils.files_restore_job import FilesRestoreJob, run_files_restore
from ansible_collections.doctorq.backup.plugins.module_utils.fileset import check_set_name
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.pg_admin import database_names, derived_db_name, drop_database
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import remove_quietly, write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, run_restore
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.tarstream import check_sample, tree_counts


@dataclasses.dataclass(frozen=True)
class DrillJob(DatabaseBackups):
    report_dir: str | None = None
    jobs: int | None = None  # pg_restore's; None: restore_directory.restore_jobs' default
    max_rpo_hours: float = 26.0
    notifier: Notifier = Notifier(notify_on="failure")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "DrillJob":
        return cls(conn=PgConn.from_params(params), db=params["db"],
                   backup_dir=params.get("backup_dir") or "/var/backups/postgresql",
                   s3=s3util.S3Config.from_params(params.get("s3")), report_dir=params.get("report_dir"),
                   jobs=params.get("jobs"),
                   max_rpo_hours=_rpo_hours(params), notifier=Notifier.from_params(params, notify_on="failure"))


@dataclasses.dataclass(frozen=True)
class FilesDrillJob:
    name: str
    backup_dir: str = "/var/backups/files"
    s3: s3util.S3Config | None = None
    report_dir: str | None = None
    scratch_dir: str | None = None  # where the scratch directory is made; default backup_dir
    max_rpo_hours: float = 26.0
    notifier: Notifier = Notifier(notify_on="failure")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "FilesDrillJob":
        return cls(name=check_set_name(params.get("file_set")),
                   backup_dir=params.get("backup_dir") or "/var/backups/files",
                   s3=s3util.S3Config.from_params(params.get("s3")), report_dir=params.get("report_dir"),
                   scratch_dir=params.get("scratch_dir"), max_rpo_hours=_rpo_hours(params),
                   notifier=Notifier.from_params(params, notify_on="failure"))


def _rpo_hours(params: dict[str, Any]) -> float:
    return params["max_rpo_hours"] if params.get("max_rpo_hours") is not None else 26.0


@dataclasses.dataclass(frozen=True)
class _Subject:
    """What a drill is about, as its report, metrics, log and webhook name it."""

    source_type: str  # "database" / "file_set"; until 1.0.0 also the report's key for the name, as before
    name: str
    event: str  # webhook event and metrics job: doctorq_<event>_*.prom
    title: str  # "Restore drill of <db>" / "Restore drill of file set <name>"
    report_file: str


def run_drill(job: DrillJob, *, echo: IO[str] | None = None) -> dict[str, Any]:
    """Drill one database; returns the report (``status`` success/failure); never raises for a failed restore."""
    subject = _Subject("database", job.db, "drill", f"Restore drill of {job.db}", f"drill_{encode_name(job.db)}.json")

    def work(started: dt.datetime, t0: float) -> tuple[dict[str, Any], str | None, dict[str, Any], float]:
        scratch = derived_db_name(job.db, f"__drill_{started.strftime(STAMP)}")
        restore = RestoreJob(conn=dataclasses.replace(job.conn, db=None), db=scratch, source="latest", source_db=job.db,
                             backup_dir=job.backup_dir, s3=job.s3, safety_backup=False, jobs=job.jobs)
        facts: dict[str, Any] = {"scratch_database": scratch}
        with PgClient(dataclasses.replace(job.conn, db=None)) as pg, \
                pg.session_lock(f"doctorq.backup drill {job.db}") as holder:
            if holder is not None:
                raise LockBusy(f"another drill of {job.db!r} is running on {job.conn.where} (its PostgreSQL session: "
                               f"pid {holder['pid']}, since {holder['since']}); this one changed nothing.")
            facts["leftovers_removed"] = _drop_leftovers(pg, job.db, scratch)
            try:
                outcome = run_restore(restore, echo=echo)
            finally:
                _drop_scratch(job.conn, scratch)
                remove_quietly(lock_path(job.backup_dir, scratch))
        if facts["leftovers_removed"]:
            outcome.setdefault("warnings", []).append(f"dropped {', '.join(map(repr, facts['leftovers_removed']))}, "
                                                      f"left behind by an interrupted drill of {job.db!r}")
        return outcome, None, {"tables": outcome.get("tables"), **facts}, round(time.monotonic() - t0, 3)

    return _drill(subject, job, work, echo)


def _drop_leftovers(pg: PgClient, db: str, scratch: str) -> list[str]:
    """The scratch databases (and their ``__restoring_`` ones) of drills of ``db`` that died; call with the drill lock.

    A drill killed mid-restore cannot drop its scratch database; with the
    server-side drill lock held, no live drill of ``db`` owns one.
    """
    stem = re.escape(scratch[:-len("YYYYmmdd_HHMMSS")])  # <db, cut to fit>__drill_
    # a scratch database, or the __restoring_ one of its restore (which cut the scratch name to fit)
    pattern = re.compile(stem + r"(?:\d{8}_\d{6}|[\d_]*__restoring_\d{8}_\d{6})$")
    dropped = []
    for name in database_names(pg, pattern):
        if name != scratch:
            drop_database(pg, name)
            dropped.append(name)
    return dropped


def run_files_drill(job: FilesDrillJob, *, echo: IO[str] | None = None) -> dict[str, Any]:
    """Drill one file set; returns the report (``status`` success/failure); never raises for a failed restore."""
    subject = _Subject("file_set", job.name, "files_drill", f"Restore drill of file set {job.name}",
                       f"drill_files_{encode_name(job.name)}.json")

    def work(started: dt.datetime, t0: float) -> tuple[dict[str, Any], str | None, dict[str, Any], float]:
        parent = job.scratch_dir or job.backup_dir
        scratch, outcome, problem, facts = None, {}, None, {}
        doing = f"cannot create a scratch directory under {parent} (set scratch_dir to a writable directory)"
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            scratch = tempfile.mkdtemp(prefix=f".drill_{encode_name(job.name)}_{started.strftime(STAMP)}_", dir=parent)
            target = os.path.join(scratch, encode_name(job.name))  # new: restored into without confirmation
            outcome = run_files_restore(FilesRestoreJob(name=job.name, backup_dir=job.backup_dir, s3=job.s3,
                                                        target=target, safety_backup=False), echo=echo)
            if not outcome.get("failed") and not outcome.get("pending"):
                doing = f"cannot read the restored tree {target}"
                facts["files"], problem = compare_with_manifest(target, (outcome.get("source") or {}).get("contents") or {})
        except OSError as exc:
            problem = f"{doing}: {exc.strerror or exc}."
        finally:
            rto = round(time.monotonic() - t0, 3)
            if scratch and not _remove_tree(scratch):
                outcome.setdefault("warnings", []).append(f"the scratch directory {scratch} could not be removed "
                                                          "entirely: remove it by hand.")
        facts["scratch_dir"] = scratch
        return outcome, problem, facts, rto

    return _drill(subject, job, work, echo)


def compare_with_manifest(top: str, fileset: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The restored tree below ``top`` against its manifest: regular files, symlinks, bytes, the content sample."""
    got = tree_counts(top)
    found = {"files": got.files, "symlinks": got.symlinks, "bytes": got.bytes}
    expected = {k: fileset.get(k) for k in found}
    sample = fileset.get("sample") or []
    differing = check_sample(top, sample)
    facts = {"expected": expected, "found": found, "sample": len(sample), "sample_differing": differing[:10]}
    problems = []
    if found != expected:
        problems.append(f"the restored tree has {got.files} files, {got.symlinks} symlinks, {got.bytes} bytes; the "
                        f"manifest says {expected['files']}, {expected['symlinks']}, {expected['bytes']}")
    if differing:
        problems.append(f"{len(differing)} of the {len(sample)} files whose content the backup recorded differ: "
                        f"{'; '.join(differing[:5])}")
    return facts, ("; ".join(problems) + ".") if problems else None


def _drill(subject: _Subject, job: DrillJob | FilesDrillJob,
           work: Callable[[dt.datetime, float], tuple[dict[str, Any], str | None, dict[str, Any], float]],
           echo: IO[str] | None) -> dict[str, Any]:
    """Run a drill's ``work`` (its restore outcome, a problem found after it, facts, RTO) in the run frame.

    The conclusion is the same for every drill: status, RPO, the JSON report,
    metrics, the log line and the webhook.
    """
    started = utcnow()
    done: list[tuple[dict[str, Any], str | None, dict[str, Any], float]] = []
    frame = Frame(title=subject.title, notifier=job.notifier, echo=echo)

    def conclude(status: str, error: str | None) -> Conclusion:
        outcome, problem, facts, rto = done[0] if done else ({"failed": True, "msg": error}, None, {}, frame.duration)
        report, metrics = _report(subject, job, started, rto, outcome, problem, facts, frame.warnings)
        frame.log(f"{subject.title}: {report['status']}; RTO {rto:.1f}s, RPO "
                  f"{'%.0fs' % report['rpo_s'] if report['rpo_s'] is not None else 'n/a'}"
                  + (f" ({report['error']})" if report["error"] else ""))
        summary = (f"{subject.title} on {report['host']}: {report['status']}"
                   + (f" ({report['error']})" if report["error"] else f", RTO {rto:.0f}s"))
        frame.result.update(report=report, restore_log=outcome.get("log") or [])
        return Conclusion(event={"event": subject.event, "status": report["status"], "summary": summary, **report},
                          metrics=metrics, metrics_job=subject.event, metrics_label=subject.name,
                          status=report["status"], error=report["error"])

    frame.run(lambda _log: done.append(work(started, frame.started_at)), conclude)
    report = frame.result["report"]
    report["warnings"] = frame.result["warnings"]
    report["log"] = frame.result["restore_log"] + frame.result["log"]
    return report


def _report(subject: _Subject, job: DrillJob | FilesDrillJob, started: dt.datetime, rto: float,
            outcome: dict[str, Any], problem: str | None, facts: dict[str, Any],
            warnings: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """The drill's report (written to ``report_dir``) and metrics; ``warnings`` gets the restore's and its own."""
    source = outcome.get("source") or {}
    rpo = round((started - parse_iso(source["started_at"])).total_seconds(), 1) if source.get("started_at") else None
    status, error = "success", None
    if outcome.get("failed"):
        status, error = "failure", outcome.get("msg")
    elif outcome.get("pending"):
        status, error = "failure", f"the newest backup cannot be read yet: {outcome.get('msg')}"
    elif problem:
        status, error = "failure", problem
    elif rpo is not None and rpo > job.max_rpo_hours * 3600:
        status, error = "failure", (f"the newest restorable backup is {rpo / 3600:.1f} h old, more than "
                                    f"max_rpo_hours={job.max_rpo_hours}: check that the backups run.")
    host = socket.gethostname()
    report = {
        "name": subject.name, "source_type": subject.source_type, subject.source_type: subject.name, "host": host,
        "at": iso(started), "status": status, "error": error,
        "backup_id": source.get("id"), "backup_location": source.get("location"),
        "backup_started_at": source.get("started_at"), "backup_size": source.get("size"), "rto_s": rto, "rpo_s": rpo,
        "durations": outcome.get("durations"), **facts,
    }
    if outcome.get("s3_error"):  # S3 could not be listed: the drill used the local copies (and warns)
        report["s3_error"] = outcome["s3_error"]
    warnings.extend(outcome.get("warnings") or [])
    if job.report_dir:
        path = os.path.join(job.report_dir, subject.report_file)
        try:
            os.makedirs(job.report_dir, mode=0o750, exist_ok=True)
            write_file_atomic(path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(), mode=0o640)
            report["report_file"] = path
        except (OSError, DoctorqError) as exc:
            warnings.append(f"cannot write the drill report {path}: {exc}")
    # the limit always, the RPO whenever measured: a drill failed by its RPO reports it (DoctorqDrillRpoOverLimit)
    measured = {"rpo_limit_seconds": job.max_rpo_hours * 3600, **({"rpo_seconds": rpo} if rpo is not None else {})}
    metrics = samples(status, rto, measured, rto_seconds=rto, rpo_seconds=rpo or 0.0)
    return report, metrics


def _drop_scratch(conn: PgConn, scratch: str) -> None:
    try:
        with PgClient(conn) as pg:
            drop_database(pg, scratch)
    except DoctorqError:
        pass  # reported by the restore itself; a leftover scratch database is named __drill_ and harmless


def _remove_tree(path: str) -> bool:
    """Remove a restored tree, also where its modes (a 0500 directory) would stop a non-root user; True when gone."""
    for directory, dirs, _files in os.walk(path):
        for name in dirs:
            sub = os.path.join(directory, name)
            if not os.path.islink(sub):  # chmod follows links: never outside the tree
                with contextlib.suppress(OSError):
                    os.chmod(sub, stat.S_IMODE(os.lstat(sub).st_mode) | stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)
