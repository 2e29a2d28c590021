# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``doctorq-backup``: the scheduled job's entry point into the same engine as the modules.

    doctorq-backup backup --config /etc/doctorq-backup/backup.json [--database DB ...] [--check]
    doctorq-backup promote-weekly --config FILE [--database DB ...]
    doctorq-backup list --config FILE [--database DB] [--verify]
    doctorq-backup drill --config FILE [--database DB ...] [--report-dir DIR] [--max-rpo-hours H]

The config file is JSON: the ``pg_backup`` module's options plus
``databases``, a list of names. Log lines go to stdout (cron mails them),
errors to stderr. Exit status: 0 success, 1 a run failed, 2 bad config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import stat
import sys
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.backup import (
    BackupJob, backup_argument_spec, promote_weekly, run_backup,
)
from ansible_collections.doctorq.backup.plugins.module_utils.drill import DrillJob, run_drill
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.info import list_backups, store_for, stores, verify
from ansible_collections.doctorq.backup.plugins.module_utils.pg import postgres_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import s3_argument_spec


def job_spec() -> dict[str, Any]:
    spec = postgres_argument_spec()
    spec.update(backup_argument_spec())
    spec["s3"] = s3_argument_spec()
    spec["databases"] = dict(type="list", elements="str", required=True)
    return spec


def load_config(path: str) -> dict[str, Any]:
    """Read and validate the config with the modules' own argument spec."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # pylint: disable=import-outside-toplevel
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}.") from None
    except ValueError as exc:
        raise ConfigError(f"config {path} is not valid JSON: {exc}.") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"config {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                          "it holds credentials: chmod 600 it.")
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must hold a JSON object of pg_backup options.")
    result = ArgumentSpecValidator(job_spec()).validate(raw)
    if result.error_messages:
        raise ConfigError(f"config {path}: " + "; ".join(result.error_messages))
    return result.validated_parameters


def _jobs(params: dict[str, Any], only: list[str] | None) -> list[BackupJob]:
    names = params["databases"]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"database(s) {', '.join(unknown)} are not in the config's databases list {names}.")
        names = only
    return [BackupJob.from_params({**params, "db": name}) for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doctorq-backup", description="PostgreSQL backups with doctorq.backup")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("backup", "back up each configured database"),
                       ("promote-weekly", "keep the newest daily backup as a weekly copy (idempotent)"),
                       ("list", "list complete backups"),
                       ("drill", "restore the newest backup into a scratch database, verify, report RTO/RPO")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", default="/etc/doctorq-backup/backup.json")
        cmd.add_argument("--database", action="append", help="only this database (repeatable)")
        if name == "backup":
            cmd.add_argument("--check", action="store_true", help="check access and show the plan; write nothing")
        if name == "list":
            cmd.add_argument("--verify", action="store_true", help="re-hash each backup")
        if name == "drill":
            cmd.add_argument("--report-dir", default="/var/lib/doctorq-backup/drills")
            cmd.add_argument("--max-rpo-hours", type=float, default=26.0)
    args = parser.parse_args(argv)
    try:
        params = load_config(args.config)
        jobs = _jobs(params, args.database)
    except ConfigError as exc:
        sys.stderr.write(f"doctorq-backup: {exc}" + "\n")
        return 2
    failed = 0
    for job in jobs:
        try:
            if args.command == "backup":
                result = run_backup(job, check_mode=args.check, echo=sys.stdout)
            elif args.command == "promote-weekly":
                result = promote_weekly(job, echo=sys.stdout)
            elif args.command == "drill":
                report = run_drill(DrillJob(conn=job.conn, db=job.db, backup_dir=job.backup_dir, s3=job.s3,
                                            report_dir=args.report_dir, max_rpo_hours=args.max_rpo_hours,
                                            notifier=dataclasses.replace(job.notifier, notify_on="failure")),
                                   echo=sys.stdout)
                result = {"failed": report["status"] != "success", "msg": report.get("error")}
            else:
                result = _list(job, args.verify)
        except DoctorqError as exc:
            result = {"failed": True, "msg": str(exc)}
        if result.get("failed"):
            failed += 1
            sys.stderr.write(f"doctorq-backup: {job.db}: {result['msg']}" + "\n")
    return 1 if failed else 0


def _list(job: BackupJob, check: bool) -> dict[str, Any]:
    candidates = stores(job.backup_dir, job.s3)
    bad = False
    for manifest in list_backups(candidates, job.db):
        line = f"{manifest.started_at}  {manifest.kind:6}  {manifest.location:5}  {manifest.size:>12}  {manifest.id}"
        if check:
            outcome = verify(manifest, store_for(manifest, candidates))
            bad = bad or outcome["ok"] is False
            line += f"  {outcome['state']}"
        sys.stdout.write(line + "\n")
    return {"failed": bad, "msg": "some backups failed verification"} if bad else {}


if __name__ == "__main__":
    raise SystemExit(main())
