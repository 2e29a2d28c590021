# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``doctorq-pgbackrest``: cron's entry point into the same pgBackRest engine as the modules.

``backup`` is the job of the ``pgbackrest_backup`` module, ``drill`` that of
``pg_pitr_restore into=drill``.

    doctorq-pgbackrest backup --level full|diff|incr [--config FILE]
    doctorq-pgbackrest drill [--config FILE] [--scratch-dir DIR] [--scratch-port N] [--report-dir DIR]
                             [--max-rpo-seconds N]

The config is JSON (0600, owned by the database OS user; it may hold the
webhook URL): ``stanza``, ``pgbackrest_config``, ``log_dir`` (run logs and
the lock; default ``pgbackrest.DEFAULT_LOG_DIR``, as the modules; its old name
``backup_dir`` is read until 1.0.0, with a warning), the notification
options, and for drills the connection options (``login_unix_socket``, ``login_port``, ``login_user``) and pg_pitr_restore's
``scratch`` (``dir``, ``port``), ``drill`` (``report_dir``, ``max_rpo_seconds``) and ``timeout``
(the drill's flags override them; the flat spellings of before, ``scratch_dir``
and so on, and the ``pitr_*`` ones are read until 1.0.0, with a warning). Log lines go to stdout (cron mails them), errors to
stderr; exit status 0 ok, 1 failed, 2 bad config. The ``pgbackrest`` role installs it as /usr/local/bin/doctorq-pgbackrest
and writes the config; the ``drill`` role schedules the drill.

``--kind physical_full|differential|incremental`` is ``--level``'s spelling of
before (docs/DESIGN.md, "Words"), read until 1.0.0 with a warning.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils.notify import notify_argument_spec
from ansible_collections.doctorq.backup.cli.backup import read_config
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import postgres_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import DEFAULT_LOG_DIR, pgbackrest_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import LEVELS
from ansible_collections.doctorq.backup.plugins.module_utils.physical_backup import PhysicalBackupJob, run_physical_backup
from ansible_collections.doctorq.backup.plugins.module_utils.pitr import run_pitr
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import RENAMED, PitrJob, pitr_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import LEVELS as OLD_LEVELS

# The drill's settings, as pg_pitr_restore names them: scratch.dir/port, drill.max_rpo_seconds/report_dir, timeout.
DRILL_OPTIONS = {"scratch": ("dir", "port"), "drill": ("max_rpo_seconds", "report_dir"), "timeout": ()}
# Read until 1.0.0, with a warning: the same settings flat (before pg_pitr_restore grouped them), and as
# pg_restore_safe spelled them (pitr_*).
_FLAT = {old: new for old, new in RENAMED.items() if new.partition(".")[0] in DRILL_OPTIONS}
LEGACY_DRILL_OPTIONS = {**_FLAT, **{f"pitr_{old}": new for old, new in _FLAT.items()}, "pitr_timeout": "timeout"}
# the drill's flags: they override the config's values
FLAGS = {"scratch_dir": "scratch.dir", "scratch_port": "scratch.port", "report_dir": "drill.report_dir",
         "max_rpo_seconds": "drill.max_rpo_seconds"}


def job_spec() -> dict[str, Any]:
    spec = postgres_argument_spec()
    spec.update(pgbackrest_argument_spec())
    # log_dir's default (DEFAULT_LOG_DIR) is filled in by load_config, after its old name backup_dir was read
    spec.update(log_dir=dict(type="path"), backup_dir=dict(type="path"), **notify_argument_spec())
    pitr = pitr_argument_spec()
    for name, keys in DRILL_OPTIONS.items():
        spec[name] = dict(pitr[name], options={k: pitr[name]["options"][k] for k in keys}) if keys else pitr[name]
    for old, new in LEGACY_DRILL_OPTIONS.items():
        group, _dot, leaf = new.partition(".")
        spec[old] = dict(pitr[group]["options"][leaf] if leaf else pitr[group], default=None)
    return spec


def _set(params: dict[str, Any], where: str, value: Any) -> None:
    """``params[group][leaf] = value`` for ``group.leaf``, ``params[name] = value`` for a flat name."""
    group, _dot, leaf = where.partition(".")
    if leaf:
        params[group] = {**(params.get(group) or {}), leaf: value}
    else:
        params[group] = value


def load_config(path: str) -> dict[str, Any]:
    """Read the 0600 config and validate it with the modules' own argument spec."""
    params = read_config(path, job_spec(), "pgbackrest job options", "pgbackrest_backup")
    for old, new in LEGACY_DRILL_OPTIONS.items():
        value = params.pop(old, None)
        if value is not None:
            sys.stderr.write(f"doctorq-pgbackrest: config {path}: {old} is deprecated and read until 1.0.0: "
                             f"name it {new}\n")
            _set(params, new, value)
    legacy_dir = params.pop("backup_dir", None)
    if legacy_dir is not None:
        sys.stderr.write(f"doctorq-pgbackrest: config {path}: backup_dir is deprecated and read until 1.0.0: "
                         "name it log_dir (the directory of the run logs and the lock)\n")
    params["log_dir"] = params.get("log_dir") or legacy_dir or DEFAULT_LOG_DIR
    return params


def _level(args: argparse.Namespace) -> str:
    """``--level``, or ``--kind`` (its spelling of before, with its values of before) with a warning."""
    if args.level:
        return args.level
    level = OLD_LEVELS[args.kind]
    sys.stderr.write(f"doctorq-pgbackrest: WARNING: --kind {args.kind} is deprecated and read until 1.0.0: "
                     f"use --level {level}\n")
    return level


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doctorq-pgbackrest", description="pgBackRest backups and PITR drills")
    sub = parser.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="one physical backup, with the run log, webhook and metrics")
    level = backup.add_mutually_exclusive_group(required=True)
    level.add_argument("--level", choices=list(LEVELS))
    level.add_argument("--kind", choices=list(OLD_LEVELS), help="deprecated: --level (read until 1.0.0)")
    drill = sub.add_parser("drill", help="recover to now into a scratch cluster, verify, report RTO/RPO, clean up")
    for cmd in (backup, drill):
        cmd.add_argument("--config", default="/etc/doctorq-backup/pgbackrest.json")
    # the drill role's schedule: these override the config's values
    drill.add_argument("--scratch-dir", dest="scratch_dir")
    drill.add_argument("--scratch-port", dest="scratch_port", type=int)
    drill.add_argument("--report-dir", dest="report_dir")
    drill.add_argument("--max-rpo-seconds", dest="max_rpo_seconds", type=int)
    args = parser.parse_args(argv)
    try:
        params = load_config(args.config)
        for name, value in vars(args).items():
            if name in FLAGS and value is not None:
                _set(params, FLAGS[name], value)
        if args.command == "backup":
            job = PhysicalBackupJob.from_params({**params, "level": _level(args)})
            result = run_physical_backup(job, echo=sys.stdout)
        else:
            job = PitrJob.from_params({**params, "into": "drill"})
            result = run_pitr(job, echo=sys.stdout)
    except ConfigError as exc:
        sys.stderr.write(f"doctorq-pgbackrest: {exc}" + "\n")
        return 2
    except DoctorqError as exc:
        result = {"failed": True, "msg": str(exc)}
    if result.get("failed"):
        sys.stderr.write(f"doctorq-pgbackrest: {result.get('msg')}" + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
