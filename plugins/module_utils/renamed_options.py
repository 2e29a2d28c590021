# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Old spellings of module options, read until 1.0.0: one table, one translation.

A module's documented options are only its current ones; what a playbook or a
cron config may still say the old way is translated here before the module
(or the command) validates its arguments: the action plugins of the modules
(``plugins/plugin_utils/renamed_options.py``) and the CLI configs use
the same ``translate()``. Each translation comes with a deprecation message
that names the new spelling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Mapping, Tuple

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError

# (old spelling, new spelling) pairs, for the deprecation message.
Moved = List[Tuple[str, str]]

COLLECTION = "doctorq.backup"
REMOVED_IN = "1.0.0"

# The notification options, once flat, are the suboptions of ``notification``.
NOTIFICATION = {name: f"notification.{name}" for name in ("webhook_url", "webhook_format", "notify_on", "metrics_dir")}
# The archive-retrieval options of restores, once flat, are the suboptions of ``archive``.
ARCHIVE = {"archive_tier": "archive.tier", "archive_days": "archive.days",
           "wait_timeout": "archive.wait_timeout", "poll_interval": "archive.poll_interval"}
# What becomes of the database or tree a restore's swap leaves (files_restore: drop only).
PREVIOUS = {"drop_previous": "previous.drop", "previous_retention_days": "previous.retention_days"}
# The safety backup of what a restore replaces.
SAFETY = {"safety_backup": "safety.backup", "safety_dir": "safety.dir"}
# How pg_restore_safe loads the verified backup into the database and checks what arrived.
LOAD = {"restore_globals": "load.globals", "no_owner": "load.no_owner", "no_privileges": "load.no_privileges",
        "row_tolerance": "load.row_tolerance"}
# The connection options every PostgreSQL module takes (doc fragment doctorq.backup.postgres), aliases too.
CONNECTION = frozenset(("login_host", "host", "login_port", "port", "login_user", "login", "login_password",
                        "login_unix_socket", "unix_socket", "db", "login_db", "ssl_mode", "ca_cert", "ssl_rootcert",
                        "connect_timeout", "pg_bin_dir"))
PGBACKREST = frozenset(("stanza", "pgbackrest_config", "pgbackrest_user"))
PITR = ("target", "target_time", "target_name", "backup_set", "into", "data_dir", "service", "scratch_dir",
        "scratch_port", "keep_scratch", "drill", "max_rpo_seconds", "report_dir", "safety_backup", "timeout")
PHYSICAL_KINDS = ("physical_full", "differential", "incremental")
# pgbackrest_backup's ``kind`` of before is its ``level``, in pgBackRest's own words (docs/DESIGN.md, "Words").
LEVELS = {"physical_full": "full", "differential": "diff", "incremental": "incr"}


@dataclasses.dataclass(frozen=True)
class Handoff:
    """Old options that ask for a job another module does now: run that module with its own spellings."""

    module: str
    applies: Callable[[Mapping[str, Any]], bool]
    renamed: Mapping[str, str]  # old name -> that module's name
    kept: frozenset[str]  # passed as they are; every other option is dropped (it did not apply to that job)
    advice: str


@dataclasses.dataclass(frozen=True)
class Renames:
    """What one module reads under old names: moved options, options that mean nothing now, a job handed off."""

    moved: Mapping[str, str] = dataclasses.field(default_factory=dict)  # old flat name -> new name or dotted path
    values: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)  # new name -> old value -> new
    dropped: Mapping[str, str] = dataclasses.field(default_factory=dict)  # old name -> why it is not needed
    handoff: Handoff | None = None


PITR_HANDOFF = Handoff(
    module="pg_pitr_restore",
    applies=lambda args: bool(args.get("pitr_target") or args.get("pitr_drill")),
    renamed={f"pitr_{name}": name for name in PITR},
    kept=CONNECTION | PGBACKREST | frozenset(("confirm", "backup_dir", "notification", *NOTIFICATION)),
    advice="a point-in-time recovery is doctorq.backup.pg_pitr_restore, whose options are the pitr_* ones without "
           "the prefix",
)
PHYSICAL_HANDOFF = Handoff(
    module="pgbackrest_backup",
    applies=lambda args: args.get("kind") in PHYSICAL_KINDS,
    renamed={},
    kept=PGBACKREST | frozenset(("kind", "backup_dir", "log_dir", "notification", *NOTIFICATION)),
    advice="a physical backup with pgBackRest is doctorq.backup.pgbackrest_backup, whose level is the kind "
           "(physical_full: full, differential: diff, incremental: incr), with the same stanza, pgbackrest_config, "
           "pgbackrest_user, log_dir and notification options",
)
NOT_PITR = "it applies to point-in-time recovery only, which is doctorq.backup.pg_pitr_restore"

TABLE: dict[str, Renames] = {
    "pg_backup": Renames(moved=NOTIFICATION, handoff=PHYSICAL_HANDOFF, dropped={
        "kind": "every pg_backup is a logical backup (physical ones are doctorq.backup.pgbackrest_backup)",
        **{name: "it applies to physical backups only, which are doctorq.backup.pgbackrest_backup"
           for name in PGBACKREST}}),
    "pg_restore_safe": Renames(moved={**NOTIFICATION, **ARCHIVE, **PREVIOUS, **SAFETY, **LOAD}, handoff=PITR_HANDOFF,
                               dropped={**{name: NOT_PITR for name in PGBACKREST},
                                        **{f"pitr_{name}": NOT_PITR for name in PITR}}),
    "files_backup": Renames(moved=NOTIFICATION),
    "files_restore": Renames(moved={**NOTIFICATION, **ARCHIVE, **SAFETY, "drop_previous": "previous.drop"}),
    "restore_drill": Renames(moved=NOTIFICATION),
    "pgbackrest_backup": Renames(moved={**NOTIFICATION, "kind": "level"}, values={"level": LEVELS}),
    "backup_info": Renames(moved={"db": "name", "type": "source_type"}, values={"source_type": {"files": "file_set"}}),
    "pg_pitr_restore": Renames(moved=NOTIFICATION),  # its flat PITR spellings: pitr_options.translate_legacy
}


@dataclasses.dataclass(frozen=True)
class Translation:
    module: str
    args: dict[str, Any]
    deprecations: list[str]


def translate(module: str, args: Mapping[str, Any]) -> Translation:
    """``module``'s arguments in today's spellings, which module runs them, and a deprecation message per old one.

    An argument given both ways keeps the new spelling's value (and the
    message says the old one was ignored). A handed-off job's arguments are
    translated again by the module that takes it, with its own messages.
    """
    renames = TABLE.get(module)
    if renames is None:
        return Translation(module, dict(args), [])
    handoff = renames.handoff
    if handoff is not None and handoff.applies(args):
        given = {name: value for name, value in args.items() if name in handoff.kept}
        given.update({handoff.renamed[name]: value for name, value in args.items() if name in handoff.renamed})
        olds = sorted(name for name in args if name in handoff.renamed or name not in handoff.kept)
        spelled = ", ".join(f"{old} -> {handoff.renamed[old]}" if old in handoff.renamed else f"{old} (ignored)"
                            for old in olds)
        note = f"{module} with {_why(module, args, handoff)} is deprecated: {handoff.advice}" + (
            f" ({spelled})." if spelled else ".")
        return Translation(handoff.module, given, [note])
    out: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in args.items():
        if name in renames.dropped:
            notes.append(f"{module}: option {name} is deprecated and ignored: {renames.dropped[name]}.")
        else:
            out[name] = value
    out, moved = move_options(out, renames.moved, renames.values)
    if moved:
        notes.append(deprecation(module, moved))
    return Translation(module, out, notes)


def move_options(params: Mapping[str, Any], renamed: Mapping[str, str],
                 values: Mapping[str, Mapping[str, str]] | None = None) -> tuple[dict[str, Any], Moved]:
    """``params`` with each old flat option in ``renamed`` moved to its new place; the pairs moved.

    The new place is a name (the option renamed) or ``group.option``. Given
    both ways, the new spelling wins and the old one is dropped (the message
    still names it). An old option's old values become the new ones
    (``values``: new name -> old value -> new value). A group given as
    something else than a dict is a ConfigError that names it.
    """
    out = {name: dict(value) if isinstance(value, Mapping) else value for name, value in params.items()
           if name not in renamed}
    moved: Moved = []
    for old, new in renamed.items():
        if old not in params or params[old] is None:
            continue
        value = params[old]
        value = (values or {}).get(new, {}).get(value, value) if isinstance(value, str) else value
        moved.append((old, new))
        if "." not in new:
            out.setdefault(new, value)
            continue
        group, sub = new.split(".", 1)
        into = out.get(group)
        if into is None:
            into = out[group] = {}
        if not isinstance(into, dict):
            raise ConfigError(f"{group} must be a dictionary of options, not {into!r} (the old option {old} is {new}).")
        into.setdefault(sub, value)
    return out, moved


def deprecation(module: str, moved: Moved, removed_in: str = REMOVED_IN) -> str:
    """One message for every old spelling a task or config used, each with its new one."""
    pairs = ", ".join(f"{old} -> {new}" for old, new in moved)
    return f"{module}: old option spellings are read until {removed_in}; use the new ones ({pairs})."


def is_true(value: Any) -> bool:
    """A flag as Ansible reads one (``yes``, ``true``, ``1``...), given as text or a boolean."""
    return boolean(value, strict=False)


def _why(module: str, args: Mapping[str, Any], handoff: Handoff) -> str:
    if handoff.module == "pgbackrest_backup":
        return f"kind={args.get('kind')}"
    return "pitr_target" if args.get("pitr_target") else "pitr_drill"
