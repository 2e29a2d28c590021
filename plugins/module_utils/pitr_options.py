# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_pitr_restore's options: the argument spec, the old spellings still read, and ``PitrJob``, the options checked.

The options come grouped (``target``, ``live``, ``scratch``, ``drill``); the
flat spellings before the grouping are translated here (``translate_legacy``,
for the module's action plugin and the drill command's config) until 1.0.0.
pg_restore_safe's ``pitr_*`` options reach it through the same translation:
its action plugin hands them over without the prefix.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any, Mapping

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import DEFAULT_CONFIG, DEFAULT_LOG_DIR, DEFAULT_USER
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import parse_time
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import Moved, is_true, move_options

TARGETS = ("time", "immediate", "end", "name")  # the old flat spellings of target (xid and lsn came after them)
KINDS = ("time", "name", "xid", "lsn", "immediate", "end")
LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
REMOVED_IN = "1.0.0"


def pitr_argument_spec() -> dict[str, Any]:
    """The recovery options of pg_pitr_restore (doc: plugins/modules/pg_pitr_restore.py)."""
    return dict(
        target=dict(type="dict", options=dict(
            time=dict(type="str"),
            name=dict(type="str"),
            xid=dict(type="str"),
            lsn=dict(type="str"),
            exclusive=dict(type="bool", default=False),
            immediate=dict(type="bool"),
            end=dict(type="bool"),
            backup_set=dict(type="str"),
        )),
        into=dict(type="str", default="scratch", choices=["scratch", "live", "drill"]),
        live=dict(type="dict", options=dict(
            data_dir=dict(type="path"),
            service=dict(type="str"),
            safety_backup=dict(type="bool", default=True),
        )),
        scratch=dict(type="dict", options=dict(
            dir=dict(type="path"),
            port=dict(type="int", default=0),
            keep=dict(type="bool"),
        )),
        drill=dict(type="dict", options=dict(
            max_rpo_seconds=dict(type="int", default=900),
            report_dir=dict(type="path"),
        )),
        timeout=dict(type="int", default=3600),
    )


# The flat spellings before the options were grouped (read until 1.0.0): old name -> new place.
RENAMED = {
    "target_time": "target.time", "target_name": "target.name", "backup_set": "target.backup_set",
    "data_dir": "live.data_dir", "service": "live.service", "safety_backup": "live.safety_backup",
    "scratch_dir": "scratch.dir", "scratch_port": "scratch.port", "keep_scratch": "scratch.keep",
    "max_rpo_seconds": "drill.max_rpo_seconds", "report_dir": "drill.report_dir",
}


def translate_legacy(params: Mapping[str, Any]) -> tuple[dict[str, Any], Moved]:
    """Parameters in the flat spelling (``target=time target_time=...``, ``drill=true``) grouped; the (old, new) pairs.

    ``target`` was a choice and ``drill`` a flag: as text or a boolean they
    are the old spelling (``target.end=true``, ``into=drill``); as a
    dictionary, the new one.
    """
    out = dict(params)
    moved: Moved = []
    target = out.get("target")
    if isinstance(target, str) and target in TARGETS:
        out["target"] = {target: True} if target in ("immediate", "end") else {}
        moved.append((f"target={target}", f"target.{target}" + ("=true" if target in ("immediate", "end") else "")))
    drill = out.get("drill")
    if drill is not None and not isinstance(drill, dict):
        del out["drill"]
        if is_true(drill):
            if out.get("into") not in (None, "scratch", "drill"):
                raise ConfigError(f"drill=true (the old spelling of into=drill) and into={out['into']} are both given: "
                                  "a PITR drill never touches the live cluster; use into=drill alone.")
            out["into"] = "drill"
        moved.append(("drill", "into=drill"))
    out, more = move_options(out, RENAMED)
    return out, moved + more


def _group(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a dictionary of options, not {value!r}.")
    return value


def _target(params: Mapping[str, Any], drill: bool) -> str:
    target = _group(params, "target")
    given = [kind for kind in KINDS if target.get(kind) not in (None, False, "")]
    if len(given) > 1:
        raise ConfigError(f"target takes one of time, name, xid, lsn, immediate or end, not {' and '.join(given)}.")
    if target.get("exclusive") and given and given[0] not in ("time", "xid", "lsn"):
        raise ConfigError(f"target.exclusive applies to a time, xid or lsn target, not to target.{given[0]}: "
                          "remove it.")
    if given:
        return given[0]
    if drill:
        return "time"  # the end of the recoverable window
    raise ConfigError("target is required (except with into=drill): {time: <ISO 8601, e.g. 2025-11-07T10:42:00Z>}, "
                      "{name: <restore point>}, {xid: <transaction ID>}, {lsn: <WAL location, e.g. 0/3000060>}, "
                      "{immediate: true} (the state of target.backup_set, default the newest backup) or {end: true} "
                      "(everything archived).")


def parse_xid(value: Any) -> int:
    """A transaction ID as ``txid_current()`` shows it: a positive integer (64-bit with the epoch)."""
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 2 ** 64:
        raise ConfigError(f"target.xid={value!r} is not a transaction ID: give a positive integer as txid_current() "
                          "or pg_current_xact_id() shows it, e.g. 7395.")
    return int(text)


def parse_lsn_target(value: Any) -> str:
    """A WAL location as ``pg_current_wal_lsn()`` shows it: two hexadecimal numbers, ``X/X``."""
    text = str(value).strip()
    if not LSN_RE.match(text):
        raise ConfigError(f"target.lsn={value!r} is not a WAL location: give it as pg_current_wal_lsn() shows it, "
                          "two hexadecimal numbers of at most 8 digits with a slash, e.g. 0/3000060.")
    return text.upper()


@dataclasses.dataclass(frozen=True)
class PitrJob:
    conn: PgConn
    target: str
    stanza: str = "main"
    config: str = DEFAULT_CONFIG
    user: str = DEFAULT_USER
    target_time: dt.datetime | None = None
    target_name: str | None = None
    target_xid: int | None = None
    target_lsn: str | None = None
    target_exclusive: bool = False
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
    log_dir: str = DEFAULT_LOG_DIR
    notifier: Notifier = Notifier()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "PitrJob":
        """pg_pitr_restore's parameters (grouped, as validated by ``pitr_argument_spec``) checked."""
        into = params.get("into") or "scratch"
        if into not in ("scratch", "live", "drill"):
            raise ConfigError(f"into must be scratch, live or drill, not {into!r}.")
        drill = into == "drill"
        target = _target(params, drill)
        when = _group(params, "target").get("time")
        scratch, live, drill_opts = _group(params, "scratch"), _group(params, "live"), _group(params, "drill")
        port = scratch.get("port") or 0
        if port < 0 or port > 65535:
            raise ConfigError("scratch.port must be a TCP port number (or 0 to pick a free one).")
        if (params.get("timeout") or 3600) < 10:
            raise ConfigError("timeout must be at least 10 seconds.")
        keep = scratch.get("keep")
        max_rpo = drill_opts.get("max_rpo_seconds")
        return cls(
            conn=dataclasses.replace(PgConn.from_params(params), db=None), target=target,
            stanza=params.get("stanza") or "main", config=params.get("pgbackrest_config") or DEFAULT_CONFIG,
            user=params.get("pgbackrest_user") or DEFAULT_USER,
            target_time=parse_time(when, "target.time") if when else None,
            target_name=_group(params, "target").get("name"),
            target_xid=parse_xid(_group(params, "target")["xid"]) if target == "xid" else None,
            target_lsn=parse_lsn_target(_group(params, "target")["lsn"]) if target == "lsn" else None,
            target_exclusive=bool(_group(params, "target").get("exclusive")), backup_set=_group(params, "target").get("backup_set"),
            into="scratch" if drill else into, data_dir=live.get("data_dir"), service=live.get("service"),
            scratch_dir=scratch.get("dir"), scratch_port=port,
            keep_scratch=(not drill) if keep is None else bool(keep), drill=drill,
            max_rpo_seconds=max_rpo if max_rpo is not None else 900, report_dir=drill_opts.get("report_dir"),
            safety_backup=live.get("safety_backup", True) is not False,
            timeout=params.get("timeout") or 3600, confirm=params.get("confirm") or "",
            log_dir=params.get("log_dir") or DEFAULT_LOG_DIR, notifier=Notifier.from_params(params),
        )
