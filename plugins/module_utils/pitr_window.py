# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recoverable window of a pgBackRest repository: what a point-in-time recovery can reach.

From the oldest usable backup's end to the newest commit in the archived WAL
(read with ``archive-get`` and ``pg_waldump``), on the newest timeline's line;
and the time formats recovery targets are read and written in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pwd
import re
import shutil
import tempfile
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, PgBackRestError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import PgBackRest, tool_env
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import Lineage, StanzaInfo, parse_history

# How far back to look for the newest commit in the archived WAL (segments).
WAL_LOOKBACK = 8

# A commit or abort record, with its transaction ID when the line shows one ("tx:    727, lsn: ...").
COMMIT_RE = re.compile(r"(?:tx:\s*(\d+),[^\n]*?)?desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) "
                       r"(UTC|[+-]\d\d(?::?\d\d)?)")


@dataclasses.dataclass(frozen=True)
class ArchivedCommit:
    """The newest transaction end (commit or abort) found in the archived WAL, and the segment holding it."""

    at: dt.datetime
    xid: int | None = None
    segment: str | None = None


def last_commit_in_waldump(text: str) -> dt.datetime | None:
    """Time of the last transaction commit/abort in ``pg_waldump`` output (run with TZ=UTC)."""
    found = newest_commit_in_waldump(text)
    return found.at if found else None


def newest_commit_in_waldump(text: str) -> ArchivedCommit | None:
    """The last transaction commit/abort in ``pg_waldump`` output: its time (UTC) and transaction ID."""
    found = None
    for match in COMMIT_RE.finditer(text):
        xid, stamp, zone = match.groups()
        when = dt.datetime.strptime(stamp + ("" if "." in stamp else ".0"), "%Y-%m-%d %H:%M:%S.%f")
        if zone == "UTC":
            when = when.replace(tzinfo=dt.timezone.utc)
        else:
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            when = when.replace(tzinfo=dt.timezone(sign * offset))
        found = ArchivedCommit(when.astimezone(dt.timezone.utc), int(xid) if xid else None)
    return found


def previous_segment(name: str, segments_per_xlogid: int = 0x100) -> str | None:
    """The WAL segment before ``name`` on the same timeline (16 MiB segments by default)."""
    if not re.match(r"^[0-9A-F]{24}$", name):
        return None
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    if seg > 0:
        seg -= 1
    elif log > 0:
        log, seg = log - 1, segments_per_xlogid - 1
    else:
        return None
    return f"{tli:08X}{log:08X}{seg:08X}"


def pg_bin(tool: str, major: str | None, bin_dir: str | None = None) -> str:
    candidates = [os.path.join(bin_dir, tool)] if bin_dir else []
    if major:
        candidates.append(f"/usr/lib/postgresql/{major}/bin/{tool}")
    found = shutil.which(tool)
    if found:
        candidates.append(found)
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise ConfigError(f"{tool} of PostgreSQL {major or '?'} not found ({', '.join(candidates) or 'no candidates'}): "
                      f"install postgresql-{major or '<major>'} or set pg_bin_dir.")


class _OwnedTmp:
    """A private temporary directory the database OS user can write into (for archive-get)."""

    def __init__(self, user: str, prefix: str) -> None:
        self.user, self.prefix = user, prefix
        self.path = ""

    def __enter__(self) -> str:
        self.path = tempfile.mkdtemp(prefix=self.prefix)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self.user)
            os.chown(self.path, owner.pw_uid, owner.pw_gid)
        os.chmod(self.path, 0o700)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def last_archived_commit(pgbr: PgBackRest, info: StanzaInfo, *, bin_dir: str | None = None,
                         lookback: int = WAL_LOOKBACK) -> dt.datetime | None:
    """Time of the newest transaction commit in the archived WAL: the end of the recoverable window.

    A recovery to a time needs a commit after it in the WAL (PostgreSQL
    stops there; without one it ends with 'recovery ended before configured
    recovery target was reached').
    """
    found = newest_archived_commit(pgbr, info, bin_dir=bin_dir, lookback=lookback)
    return found.at if found else None


def newest_archived_commit(pgbr: PgBackRest, info: StanzaInfo, *, bin_dir: str | None = None,
                           lookback: int = WAL_LOOKBACK) -> ArchivedCommit | None:
    """The newest transaction commit that reached the repository (time, xid, segment), or None.

    Reads the newest archived segments with ``pgbackrest archive-get`` and
    ``pg_waldump``, newest first, at most ``lookback`` of them.
    """
    if not info.archive_max:
        return None
    waldump = pg_bin("pg_waldump", info.pg_version, bin_dir)
    with _OwnedTmp(pgbr.user, "doctorq-wal-") as work:
        segment: str | None = info.archive_max
        for _step in range(lookback):
            if segment is None or (info.archive_min and segment < info.archive_min):
                break
            dest = os.path.join(work, segment)
            if pgbr.archive_get(segment, dest):
                # check=False: pg_waldump ends with an error at the first invalid record of a segment that
                # was archived before it filled up; the records before it are what we read
                dump = procs.run([waldump, dest], env=tool_env(), user=pgbr.user, timeout=300, check=False)
                found = newest_commit_in_waldump(dump.stdout)
                os.unlink(dest)
                if found is not None:
                    return dataclasses.replace(found, segment=segment)
            segment = previous_segment(segment)
        return None


def lineage(pgbr: PgBackRest, info: StanzaInfo) -> Lineage:
    """Read the newest timeline's history file from the repository (timeline 1 has none)."""
    if not info.archive_max or not re.match(r"^[0-9A-F]{8}", info.archive_max):
        return Lineage(1, {})
    latest = int(info.archive_max[:8], 16)
    if latest == 1:
        return Lineage(1, {})
    with _OwnedTmp(pgbr.user, "doctorq-tli-") as work:
        name = f"{latest:08X}.history"
        dest = os.path.join(work, name)
        if not pgbr.archive_get(name, dest):
            raise PgBackRestError(f"the repository has WAL of timeline {latest} but not its history file {name}: "
                                  "check the archive with pgbackrest info.")
        with open(dest, encoding="utf-8", errors="replace") as handle:
            return Lineage(latest, parse_history(handle.read()))


@dataclasses.dataclass(frozen=True)
class Window:
    """The times a point-in-time recovery can reach: from the oldest backup's end to the newest archived commit."""

    start: dt.datetime | None
    end: dt.datetime | None
    oldest_backup: str | None
    newest_backup: str | None

    def contains(self, when: dt.datetime) -> bool:
        return self.start is not None and self.end is not None and self.start <= when <= self.end

    def describe(self) -> str:
        if self.start is None:
            return "no backup to recover from"
        end = iso_us(self.end) if self.end else "unknown (no commit found in the newest archived WAL)"
        return f"{iso_us(self.start)} to {end}"

    def summary(self) -> dict[str, Any]:
        return {"start": iso_us(self.start) if self.start else None, "end": iso_us(self.end) if self.end else None,
                "oldest_backup": self.oldest_backup, "newest_backup": self.newest_backup,
                "seconds": (self.end - self.start).total_seconds() if self.start and self.end and self.end > self.start else 0}


def window_of(info: StanzaInfo, last_commit: dt.datetime | None, backup_set: str | None = None,
              line: Lineage | None = None) -> Window:
    """From just after the oldest usable (or the chosen) backup ended to just before the newest archived commit.

    PostgreSQL stops a time-targeted recovery before the first commit later
    than the target; a target at or after the newest archived commit never
    finds one and the recovery fails. So the last reachable target is one
    microsecond before that commit (which is then not replayed). Only
    backups on the newest timeline's line count (see ``Lineage``).
    """
    end = last_commit - dt.timedelta(microseconds=1) if last_commit else None
    usable = [b for b in info.usable() if line is None or line.on_it(b)]
    if backup_set:
        chosen = info.find(backup_set)
        if chosen is None or chosen.error:
            raise ConfigError(f"backup set {backup_set!r} is not a usable backup of stanza {info.name!r}: "
                              f"known are {', '.join(b.id for b in info.usable()) or 'none'}.")
        usable = [chosen]
    if not usable:
        return Window(None, end, None, None)
    start = usable[0].consistent_from
    return Window(start, end if end is None or end >= start else None, usable[0].id, usable[-1].id)


def iso_us(when: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds when there are any (recovery targets need them)."""
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if when.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def pg_time(when: dt.datetime) -> str:
    """A time as pgBackRest's --target and PostgreSQL's recovery_target_time both read it."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def parse_time(text: str, option: str) -> dt.datetime:
    """ISO 8601 (``2025-11-07T10:42:00Z``, an offset, or none = UTC) or ``YYYY-mm-dd HH:MM:SS[.ffffff]``."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}={text!r} is not a date and time: use e.g. 2025-11-07T10:42:00Z.") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def physical_listing(pgbr: PgBackRest, *, bin_dir: str | None = None) -> dict[str, Any]:
    """Physical backups (newest first) and the recoverable window, read-only."""
    info = pgbr.info()
    end = last_archived_commit(pgbr, info, bin_dir=bin_dir)
    line = lineage(pgbr, info)
    window = window_of(info, end, line=line)
    backups = [{**b.summary(), "timeline": b.timeline, "on_latest_timeline": line.on_it(b)} for b in reversed(info.backups)]
    return {"physical_backups": backups, "recoverable_window": window.summary(),
            "stanza_status": {"code": info.status_code, "message": info.status, "pg_version": info.pg_version,
                              "archive_min": info.archive_min, "archive_max": info.archive_max, "cipher": info.cipher}}
