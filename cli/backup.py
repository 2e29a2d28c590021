# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``doctorq-backup``: the scheduled job's entry point into the same engine as the modules.

    doctorq-backup backup --config /etc/doctorq-backup/backup.json [--database DB ...] [--check]
    doctorq-backup promote-weekly --config FILE [--database DB ...]
    doctorq-backup list --config FILE [--database DB ... | --name SET ...] [--verify]
    doctorq-backup drill --config FILE [--database DB ...] [--report-dir DIR] [--max-rpo-hours H]
    doctorq-backup files --config /etc/doctorq-backup/files.json [--name SET ...] [--check]
    doctorq-backup files-drill --config FILE [--name SET ...] [--report-dir DIR] [--max-rpo-hours H] [--scratch-dir DIR]

Two kinds of config file, both JSON, mode 0600 (they may hold credentials):

- databases (backup, promote-weekly, drill): the ``pg_backup`` module's
  options plus ``databases``, a list of names;
- file sets (files, files-drill): the ``files_backup`` module's options shared
  by every set (all but ``name``, ``paths`` and ``preset``) plus ``sets``, a
  list of objects: a set's ``name`` and ``paths`` or ``preset`` (which names
  the set when ``name`` is left out), and any other ``files_backup`` option
  for that set alone, replacing the shared value (``exclude``, ``root``,
  ``one_file_system``, ``on_change``, retention, ``s3``, ...).

``list`` takes either: it lists the databases' or the file sets' backups.
Both are validated with the modules' own argument specs. Log lines go to
stdout (cron mails them), errors to stderr. Exit status: 0 success, 1 a run
failed (the others still run), 2 bad config (nothing runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import stat
import sys
import traceback
from typing import Any, Callable

from ansible_collections.doctorq.backup.plugins.module_utils.backup import (
    BackupJob, backup_argument_spec, promote_weekly, run_backup,
)
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.files_backup_job import FilesJob, files_backup_argument_spec, run_files_backup
from ansible_collections.doctorq.backup.plugins.module_utils.fileset import TYPE as FILE_SET, check_set_name
from ansible_collections.doctorq.backup.plugins.module_utils.listing import (
    ignored, list_reachable, s3_unavailable, store_for, stores, verify,
)
from ansible_collections.doctorq.backup.plugins.module_utils.policy import check_policy
from ansible_collections.doctorq.backup.plugins.module_utils.pg import postgres_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import translate
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import Terminated, signals_raise
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_argument_spec

FILES_COMMANDS = ("files", "files-drill")
SET_ONLY = ("name", "paths", "preset")  # options that only make sense per set
PROGRAMS = {"pgbackrest_backup": "doctorq-pgbackrest"}  # whose config holds which module's options; else doctorq-backup


def job_spec() -> dict[str, Any]:
    spec = postgres_argument_spec()
    spec.update(backup_argument_spec())
    spec["s3"] = s3_argument_spec()
    spec["databases"] = dict(type="list", elements="str", required=True)
    return spec


def files_job_spec() -> dict[str, Any]:
    """The files config: files_backup's options shared by every set, and ``sets`` holding each set's own."""
    options = files_backup_argument_spec()
    options["s3"] = s3_argument_spec()
    spec = {name: option for name, option in options.items() if name not in SET_ONLY}
    # no defaults inside a set: an option a set leaves out takes the shared value (a notification setting too)
    per_set = {name: _without_defaults(option) for name, option in options.items()}
    per_set["notification"]["options"] = {name: _without_defaults(sub)
                                          for name, sub in per_set["notification"]["options"].items()}
    spec["sets"] = dict(type="list", elements="dict", required=True, options=per_set)
    return spec


def _without_defaults(option: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in option.items() if k != "default"}


def read_config(path: str, spec: dict[str, Any], what: str, module: str, per_set: str | None = None) -> dict[str, Any]:
    """Read a 0600 JSON config and validate it with the modules' own argument spec.

    Old spellings of ``module``'s options (renamed_options' table) are read
    with a warning on stderr, in the config itself and in each entry of its
    ``per_set`` list.
    """
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # pylint: disable=import-outside-toplevel
    from ansible.module_utils.errors import UnsupportedError  # pylint: disable=import-outside-toplevel
    raw = _read_json(path, what)
    raw = _today(path, module, raw)
    if per_set and isinstance(raw.get(per_set), list):
        raw[per_set] = [_today(path, module, entry) if isinstance(entry, dict) else entry for entry in raw[per_set]]
    result = ArgumentSpecValidator(spec).validate(raw)
    if result.error_messages:
        raise ConfigError(f"config {path}: " + "; ".join(
            ("unknown option " if isinstance(error, UnsupportedError) else "") + error.error_message
            for error in result.errors.errors))
    return result.validated_parameters


def _today(path: str, module: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` in today's spellings of ``module``'s options; a warning on stderr for each old one."""
    try:
        done = translate(module, raw)
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    if done.module != module:
        raise ConfigError(f"config {path}: " + " ".join(done.deprecations))
    for note in done.deprecations:
        sys.stderr.write(f"{PROGRAMS.get(module, 'doctorq-backup')}: WARNING: config {path}: {note}" + "\n")
    return done.args


def _read_json(path: str, what: str) -> Any:
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
        raise ConfigError(f"config {path} must hold a JSON object of {what}.")
    return raw


def load_config(path: str) -> dict[str, Any]:
    """The databases' config (pg_backup options and ``databases``)."""
    return read_config(path, job_spec(), "pg_backup options", "pg_backup")


def load_files_config(path: str) -> list[dict[str, Any]]:
    """The file sets' config: one files_backup parameter dict per set, the shared options merged in."""
    params = read_config(path, files_job_spec(), "files_backup options and sets", "files_backup", per_set="sets")
    shared = {k: v for k, v in params.items() if k != "sets"}
    found: list[dict[str, Any]] = []
    for number, entry in enumerate(params["sets"], 1):
        merged = {**shared, **{k: v for k, v in entry.items() if v is not None}}
        if entry.get("notification"):  # a set's own notification settings, the shared ones for the rest
            merged["notification"] = {**(shared.get("notification") or {}),
                                      **{k: v for k, v in entry["notification"].items() if v is not None}}
        name = merged.get("name") or merged.get("preset")
        if not name:
            raise ConfigError(f"config {path}: set #{number} has no name (nor a preset, which would name it).")
        try:
            check_set_name(name)
            if not merged.get("paths") and not merged.get("preset"):
                raise ConfigError("give paths or a preset.")
            check_policy(merged)
            S3Config.from_params(merged.get("s3"))
        except ConfigError as exc:
            raise ConfigError(f"config {path}: set {name!r}: {exc}") from None
        if any(s["name"] == name for s in found):
            raise ConfigError(f"config {path}: two sets are named {name!r}; each set needs its own name.")
        found.append({**merged, "name": name})
    return found


def _selected(items: list[Any], names: list[str], only: list[str] | None, what: str, where: str) -> list[Any]:
    if not only:
        return items
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ConfigError(f"{what} {', '.join(unknown)} are not in the config's {where} {names}.")
    return [item for item, name in zip(items, names) if name in only]


def _jobs(params: dict[str, Any], only: list[str] | None) -> list[BackupJob]:
    names = params["databases"]
    return [BackupJob.from_params({**params, "db": name})
            for name in _selected(names, names, only, "database(s)", "databases list")]


def _file_sets(path: str, only: list[str] | None) -> list[dict[str, Any]]:
    sets = load_files_config(path)
    return _selected(sets, [s["name"] for s in sets], only, "file set(s)", "sets")


Run = Callable[[], dict]


def _database_runs(args: argparse.Namespace, params: dict[str, Any]) -> list[tuple[str, Run]]:
    runs: list[tuple[str, Run]] = []
    for job in _jobs(params, args.database):
        if args.command == "backup":
            run: Run = functools.partial(run_backup, job, check_mode=args.check, echo=sys.stdout)
        elif args.command == "promote-weekly":
            run = functools.partial(promote_weekly, job, echo=sys.stdout)
        elif args.command == "drill":
            run = functools.partial(_drill, job, args)
        else:
            run = functools.partial(_list, job.backup_dir, job.s3, job.db, "database", args.verify)
        runs.append((job.db, run))
    return runs


def _files_runs(args: argparse.Namespace, sets: list[dict[str, Any]]) -> list[tuple[str, Run]]:
    runs: list[tuple[str, Run]] = []
    for params in sets:
        if args.command == "files":
            run: Run = functools.partial(_files_backup, params, args.check)
        elif args.command == "files-drill":
            run = functools.partial(_files_drill, params, args)
        else:
            run = functools.partial(_list, params["backup_dir"], S3Config.from_params(params.get("s3")), params["name"],
                                    FILE_SET, args.verify)
        runs.append((params["name"], run))
    return runs


def _drill(job: BackupJob, args: argparse.Namespace) -> dict[str, Any]:
    # the drill commands alone load the restore side (0.07 s at every backup's start otherwise)
    from ansible_collections.doctorq.backup.plugins.module_utils import drill  # pylint: disable=import-outside-toplevel
    report = drill.run_drill(drill.DrillJob(conn=job.conn, db=job.db, backup_dir=job.backup_dir, s3=job.s3,
                                            report_dir=args.report_dir, max_rpo_hours=args.max_rpo_hours,
                                            notifier=dataclasses.replace(job.policy.notifier, notify_on="failure")),
                             echo=sys.stdout)
    return {"failed": report["status"] != "success", "msg": report.get("error")}


def _files_backup(params: dict[str, Any], check: bool) -> dict[str, Any]:
    """A path that is gone fails this set only (ConfigError here is a run failure): the other sets still run."""
    return run_files_backup(FilesJob.from_params(params), check_mode=check, echo=sys.stdout)


def _files_drill(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    # the drill commands alone load the restore side (0.07 s at every backup's start otherwise)
    from ansible_collections.doctorq.backup.plugins.module_utils import drill  # pylint: disable=import-outside-toplevel
    job = drill.FilesDrillJob.from_params({**params, "file_set": params["name"], "report_dir": args.report_dir,
                                           "scratch_dir": args.scratch_dir, "max_rpo_hours": args.max_rpo_hours})
    report = drill.run_files_drill(dataclasses.replace(job, notifier=dataclasses.replace(job.notifier, notify_on="failure")),
                                   echo=sys.stdout)
    return {"failed": report["status"] != "success", "msg": report.get("error")}


def _is_files_config(path: str) -> bool:
    """``list`` takes either config: a files config is the one with ``sets``."""
    try:
        return "sets" in _read_json(path, "options")
    except ConfigError:
        return False  # load_config says what is wrong with it


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doctorq-backup", description="PostgreSQL and file backups with doctorq.backup")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("backup", "back up each configured database"),
                       ("promote-weekly", "keep the newest daily backup as a weekly copy (idempotent)"),
                       ("list", "list complete backups (of the databases, or of the file sets of a files config)"),
                       ("drill", "restore the newest backup into a scratch database, verify, report RTO/RPO"),
                       ("files", "back up each configured file set"),
                       ("files-drill", "restore the newest backup of each file set into a scratch directory, compare "
                                       "it with the manifest, report RTO/RPO")):
        cmd = sub.add_parser(name, help=text)
        files = name in FILES_COMMANDS
        cmd.add_argument("--config", default="/etc/doctorq-backup/files.json" if files else "/etc/doctorq-backup/backup.json")
        if not files:
            cmd.add_argument("--database", action="append", help="only this database (repeatable)")
        if files or name == "list":
            cmd.add_argument("--name", action="append", help="only this file set (repeatable)")
        if name in ("backup", "files"):
            cmd.add_argument("--check", action="store_true", help="check access and show the plan; write nothing")
        if name == "list":
            cmd.add_argument("--verify", action="store_true", help="re-hash each backup")
        if name in ("drill", "files-drill"):
            cmd.add_argument("--report-dir", default="/var/lib/doctorq-backup/drills")
            cmd.add_argument("--max-rpo-hours", type=float, default=26.0)
        if name == "files-drill":
            cmd.add_argument("--scratch-dir", help="where the scratch directory is made (default: the backup_dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in FILES_COMMANDS or (args.command == "list" and _is_files_config(args.config)):
            if getattr(args, "database", None):
                raise ConfigError(f"{args.config} is a file sets config: select sets with --name, not --database.")
            sets = _file_sets(args.config, args.name)
            runs, hidden = _files_runs(args, sets), [v for params in sets for v in _secrets(params)]
        else:
            if getattr(args, "name", None):
                raise ConfigError(f"{args.config} is a databases config: select databases with --database, not --name.")
            params = load_config(args.config)
            runs, hidden = _database_runs(args, params), _secrets(params)
    except ConfigError as exc:
        sys.stderr.write(f"doctorq-backup: {exc}" + "\n")
        return 2
    return run_all(runs, hidden)


def run_all(runs: list[tuple[str, Run]], hidden: list[str] | None = None) -> int:
    """Run each database's or file set's job whatever happened to the ones before: 0, or 1 if any failed.

    A failure is one line on stderr, ``doctorq-backup: <name>: <message>``
    (cron mails it); an unexpected exception (a bug) is named the same way,
    never a traceback, and never skips the ones after it. ``hidden``: the
    config's secrets, kept out of those lines.
    """
    failed = 0
    for label, run in runs:
        try:
            with signals_raise():
                result = run()
        except DoctorqError as exc:
            result = {"failed": True, "msg": str(exc)}
        except Terminated as exc:  # the run's frame has logged and notified it; the rest is not started
            sys.stderr.write(f"doctorq-backup: {label}: {exc}; the remaining runs were not started." + "\n")
            return 1
        except Exception as exc:  # pylint: disable=broad-except
            result = {"failed": True, "msg": _internal_error(exc)}
        if result.get("failed"):
            failed += 1
            msg = str(result.get("msg") or "failed")
            for secret in hidden or []:
                msg = msg.replace(secret, "********")
            sys.stderr.write(f"doctorq-backup: {label}: {msg}" + "\n")
    return 1 if failed else 0


def _internal_error(exc: Exception) -> str:
    """One line for an exception the engine did not expect: its type, message and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" in {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return (f"internal error ({type(exc).__name__}: {exc}{where}); this is a bug, please report it with the run log. "
            "The others still run.")


def _secrets(params: dict[str, Any]) -> list[str]:
    """The no_log values of one job's parameters (password, webhook URL, S3 secret key and token)."""
    s3 = params.get("s3") or {}
    values = [params.get("login_password"), (params.get("notification") or {}).get("webhook_url"), s3.get("secret_key"),
              s3.get("session_token")]
    return [v for v in values if isinstance(v, str) and v]


def _list(backup_dir: str | None, s3cfg: S3Config | None, name: str, source_type: str, check: bool) -> dict[str, Any]:
    candidates = stores(backup_dir, s3cfg)
    bad = False
    listed, s3_error = list_reachable(candidates, name, source_type)
    if s3_error:  # the local backups are listed all the same
        sys.stderr.write(f"doctorq-backup: WARNING: {s3_unavailable(s3_error, backup_dir or '')}" + "\n")
    for warning in ignored(candidates):
        sys.stderr.write(f"doctorq-backup: WARNING: {warning}" + "\n")
    for manifest in listed:
        line = f"{manifest.started_at}  {manifest.kind:6}  {manifest.location:5}  {manifest.size:>12}  {manifest.id}"
        if check:
            outcome = verify(manifest, store_for(manifest, candidates))
            bad = bad or outcome["ok"] is False
            line += f"  {outcome['state']}"
        sys.stdout.write(line + "\n")
    return {"failed": bad, "msg": "some backups failed verification"} if bad else {}


if __name__ == "__main__":
    raise SystemExit(main())
