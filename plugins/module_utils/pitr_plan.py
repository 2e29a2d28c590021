# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a point-in-time recovery: where it goes, what it recovers to, and from which backup.

Where: the live data directory (with its confirmation) or a scratch
directory that must be new or empty. What: the target, checked against the
recoverable window before anything is touched (PostgreSQL would otherwise
replay everything and stop with "recovery ended before configured recovery
target was reached", leaving the cluster down). From which backup: one on
the newest timeline's line. And pgBackRest's restore options for all that.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import read_conf
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import Lineage, StanzaInfo, parse_lsn
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import Window, iso_us, pg_time


def stanza_path(job: PitrJob) -> str:
    """The stanza's data directory as pgBackRest's config names it (``pg1-path``)."""
    conf = read_conf(job.config)
    for section in (job.stanza, "global"):
        if conf.has_option(section, "pg1-path"):
            return conf.get(section, "pg1-path")
    raise ConfigError(f"{job.config} sets no pg1-path for stanza {job.stanza!r}: set live.data_dir.")


def live_dir(job: PitrJob) -> str:
    return job.data_dir or stanza_path(job)


def check_confirmation(job: PitrJob) -> None:
    if job.into == "live" and job.confirm != job.stanza:
        said = f"confirm={job.confirm!r} does not match" if job.confirm else "no confirmation was given"
        raise ConfigError(f"a point-in-time recovery into the live cluster replaces all of stanza {job.stanza!r} "
                          f"and {said}: set confirm={job.stanza} (the stanza's name) to go ahead. "
                          "Nothing was touched.")


def check_live_dir(job: PitrJob, data_dir: str) -> None:
    """pg_ctl starts only a data directory that holds its postgresql.conf: elsewhere the service must be named."""
    if not job.service and not os.path.exists(os.path.join(data_dir, "postgresql.conf")) \
            and os.path.exists(os.path.join(data_dir, "PG_VERSION")):
        raise ConfigError(f"{data_dir} has no postgresql.conf (Debian keeps it in /etc/postgresql), so pg_ctl cannot "
                          "start it: set live.service to the cluster's systemd unit, e.g. postgresql@15-main. "
                          "Nothing was touched.")


def scratch_dir(job: PitrJob) -> str:
    """The scratch data directory, checked: new or empty, not the live one, short enough for a socket."""
    path = job.scratch_dir or (stanza_path(job).rstrip("/") + "_pitr_scratch")
    path = os.path.abspath(path)
    live = os.path.realpath(live_dir(job))
    if os.path.realpath(path) == live:
        raise ConfigError(f"scratch.dir {path} is the live data directory: choose another directory.")
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ConfigError(f"scratch.dir {path} exists and is not empty: a scratch recovery needs an empty or "
                          f"new directory. A scratch cluster kept earlier is stopped with "
                          f"'pg_ctl -D {path} stop' and then removed. Nothing was touched.")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ConfigError(f"the parent of scratch.dir, {parent}, does not exist.")
    if len(os.path.join(path, ".s.PGSQL.65535.lock")) > 107:
        raise ConfigError(f"scratch.dir {path} is too long to hold the scratch server's unix socket "
                          "(107 bytes at most): choose a shorter path.")
    return path


def check_target(job: PitrJob, window: Window) -> dt.datetime | None:
    """The time to recover to (None for the other targets), refused outside the window."""
    if window.start is None:
        raise ConfigError(f"stanza {job.stanza!r} has no usable backup: take one "
                          "(pgbackrest_backup level=full) first. Nothing was touched.")
    if job.target != "time":
        return None
    when = job.target_time or window.end
    if when is None:
        raise ConfigError("the end of the recoverable window is unknown (no commit found in the newest archived WAL): "
                          "use target.end or target.immediate. Nothing was touched.")
    if not window.contains(when):
        side = "before the oldest backup finished" if when < window.start else "after the newest archived commit"
        raise ConfigError(f"target.time {iso_us(when)} is outside the recoverable window {window.describe()} "
                          f"({side}): choose a time inside it"
                          + (", or target.end for everything archived" if when > window.start else "")
                          + ". Nothing was touched.")
    return when


def describe_target(job: PitrJob, when: dt.datetime | None) -> str:
    """The target as the log says it: ``time 2025-...``, ``xid 7395 (exclusive)``, ``immediate``..."""
    value = {"time": iso_us(when) if when else None, "name": job.target_name, "xid": job.target_xid,
             "lsn": job.target_lsn}.get(job.target)
    return job.target + (f" {value}" if value is not None else "") + (" (exclusive)" if job.target_exclusive else "")


def target_facts(job: PitrJob, when: dt.datetime | None) -> dict[str, Any]:
    """The target as the plan, the result and the audit line report it."""
    return {"target": job.target, "target_time": iso_us(when) if when else None, "target_name": job.target_name,
            "target_xid": job.target_xid, "target_lsn": job.target_lsn, "target_exclusive": job.target_exclusive}


def pick_set(job: PitrJob, info: StanzaInfo, line: Lineage, when: dt.datetime | None) -> tuple[str, bool]:
    """The backup to start from, and whether it lies off the newest timeline's line.

    pgBackRest would pick the newest backup that ended before the target
    whatever its timeline; after a point-in-time recovery that can be a
    backup of the abandoned branch, from which the newest timeline cannot
    be reached ("could not locate required checkpoint record").
    """
    if job.backup_set:
        chosen = info.find(job.backup_set)
        if line.on_it(chosen):
            return chosen.id, False
        if job.target != "immediate":
            raise ConfigError(f"backup set {chosen.id} was taken on timeline {chosen.timeline} after the newest "
                              f"timeline {line.latest} branched off it (a point-in-time recovery since): only "
                              "target.immediate restores it (its own state); omit target.backup_set to recover "
                              f"along timeline {line.latest}. Nothing was touched.")
        return chosen.id, True
    candidates = [b for b in info.usable() if line.on_it(b) and (when is None or b.consistent_from <= when)]
    if job.target == "lsn":  # pgBackRest would take the newest backup, which may end after the location
        candidates = [b for b in candidates if b.lsn_stop is None or parse_lsn(b.lsn_stop) <= parse_lsn(job.target_lsn)]
        if not candidates:
            raise ConfigError(f"target.lsn {job.target_lsn} lies before the end of every backup of stanza "
                              f"{job.stanza!r} on timeline {line.latest}'s line (backup_info lists their lsn_stop): "
                              "choose a later location. Nothing was touched.")
    if not candidates:
        raise ConfigError(f"no backup of stanza {job.stanza!r} on timeline {line.latest}'s line ended before "
                          f"{iso_us(when) if when else 'now'}. Nothing was touched.")
    if job.target == "xid":
        # the repository cannot tell when a transaction ID committed: the oldest backup reaches every one the
        # window holds (a newer one that ended after the commit never finds it); target.backup_set saves replay
        return candidates[0].id, False
    return candidates[-1].id, False


def restore_options(job: PitrJob, when: dt.datetime | None, data_dir: str, backup_set: str | None = None,
                    off_line: bool = False) -> list[str]:
    """``pgbackrest restore``'s options: the target, the set, and how the data directory is written."""
    opts = {"time": ["--type=time", f"--target={pg_time(when)}"] if when else [],
            "immediate": ["--type=immediate"], "end": ["--type=default"],
            "name": ["--type=name", f"--target={job.target_name}"],
            "xid": ["--type=xid", f"--target={job.target_xid}"],
            "lsn": ["--type=lsn", f"--target={job.target_lsn}"]}[job.target]
    if job.target_exclusive and job.target in ("time", "xid", "lsn"):
        opts.append("--target-exclusive")  # stop just before the target instead of just after it
    if job.target != "end":
        opts.append("--target-action=promote")
    if backup_set:
        opts.append(f"--set={backup_set}")
    if off_line:
        # pgBackRest allows --target-timeline only with a target; the recovery setting itself always works
        opts.append("--recovery-option=recovery_target_timeline=current")
    opts.append(f"--pg1-path={data_dir}")
    if job.into == "live":
        opts += ["--delta", "--link-all"]
    else:
        # archiving off: a scratch cluster must never push its new timeline into the repository;
        # tablespaces must never land on the live cluster's paths
        opts += ["--archive-mode=off", f"--tablespace-map-all={data_dir}.tablespaces"]
    return opts
