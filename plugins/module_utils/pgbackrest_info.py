# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest's catalog: ``pgbackrest info --output=json`` parsed, and the timeline lineage of its archive.

Pure parsing, no I/O: the runner (``pgbackrest.py``) fetches the JSON and
the history files, this file reads them. A physical backup's ``level`` is
pgBackRest's own word (``LEVELS``: full, diff, incr; docs/DESIGN.md, "Words").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgBackRestError
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import LEVELS as OLD_LEVELS

# A physical backup's levels, pgBackRest's backup types (``pgbackrest backup --type=<level>``).
LEVELS = ("full", "diff", "incr")
# A level in the words of before (pgbackrest_backup's kind: physical_full...), in results and events until 1.0.0.
OLD_LEVEL_WORDS = {level: old for old, level in OLD_LEVELS.items()}


def old_level_word(level: str) -> str:
    """``level`` as the results said it before docs/DESIGN.md's "Words" (``incr`` -> ``incremental``)."""
    return OLD_LEVEL_WORDS.get(level, level)


def _ts(epoch: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch is not None else None


@dataclasses.dataclass(frozen=True)
class PhysicalBackup:
    id: str  # pgBackRest's label
    level: str  # pgBackRest's type: full, diff or incr
    prior: str | None
    started: dt.datetime
    stopped: dt.datetime
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    database_size: int
    delta: int
    repo_size: int
    repo_delta: int
    error: bool = False

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "PhysicalBackup":
        info = raw.get("info") or {}
        repo = info.get("repository") or {}
        archive = raw.get("archive") or {}
        lsn = raw.get("lsn") or {}
        stamp = raw.get("timestamp") or {}
        return cls(id=raw["label"], level=raw["type"], prior=raw.get("prior"), started=_ts(stamp.get("start")),
                   stopped=_ts(stamp.get("stop")), wal_start=archive.get("start"), wal_stop=archive.get("stop"),
                   lsn_start=lsn.get("start"), lsn_stop=lsn.get("stop"), database_size=int(info.get("size") or 0),
                   delta=int(info.get("delta") or 0), repo_size=int(repo.get("size") or 0),
                   repo_delta=int(repo.get("delta") or 0), error=bool(raw.get("error")))

    @property
    def timeline(self) -> int | None:
        return int(self.wal_start[:8], 16) if self.wal_start and re.match(r"^[0-9A-F]{8}", self.wal_start) else None

    @property
    def consistent_from(self) -> dt.datetime:
        """Earliest recovery target this backup can serve: after its stop (pgBackRest keeps whole seconds)."""
        return self.stopped + dt.timedelta(seconds=1)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "level": self.level, "prior": self.prior,
                "started_at": iso(self.started), "finished_at": iso(self.stopped),
                "duration_s": (self.stopped - self.started).total_seconds(),
                "database_size": self.database_size, "delta": self.delta, "repo_size": self.repo_size,
                "repo_delta": self.repo_delta, "wal_start": self.wal_start, "wal_stop": self.wal_stop,
                "lsn_start": self.lsn_start, "lsn_stop": self.lsn_stop, "error": self.error,
                # the words of before, until 1.0.0: label (id), kind (the level as physical_full...) and type (level)
                "label": self.id, "kind": old_level_word(self.level), "type": self.level}


@dataclasses.dataclass(frozen=True)
class StanzaInfo:
    name: str
    status_code: int
    status: str
    backups: tuple[PhysicalBackup, ...]
    archive_min: str | None
    archive_max: str | None
    pg_version: str | None
    system_id: int | None
    cipher: str | None
    repo_error: str | None = None

    @classmethod
    def parse(cls, data: Any, stanza: str) -> "StanzaInfo":
        entry = next((s for s in data if isinstance(s, dict) and s.get("name") == stanza), None) if isinstance(data, list) else None
        if entry is None:
            raise PgBackRestError(f"pgbackrest info does not list stanza {stanza!r}: check the stanza name.")
        dbs = entry.get("db") or []
        current = dbs[-1] if dbs else {}
        # WAL of the current cluster (after an upgrade, older db ids hold the old cluster's WAL)
        archives = [a for a in entry.get("archive") or [] if (a.get("database") or {}).get("id") == current.get("id")]
        archive = archives[-1] if archives else {}
        backups = tuple(sorted((PhysicalBackup.parse(b) for b in entry.get("backup") or []
                                if (b.get("database") or {}).get("id") == current.get("id")),
                               key=lambda b: (b.stopped, b.id)))
        status = entry.get("status") or {}
        repo_errors = [r["status"]["message"] for r in entry.get("repo") or []
                       if (r.get("status") or {}).get("code") not in (0, 2, None) and r["status"].get("message")]
        return cls(name=stanza, status_code=int(status.get("code", -1)), status=status.get("message") or "",
                   backups=backups, archive_min=archive.get("min"), archive_max=archive.get("max"),
                   pg_version=current.get("version"), system_id=current.get("system-id"), cipher=entry.get("cipher"),
                   repo_error=repo_errors[0] if repo_errors else None)

    @property
    def ok(self) -> bool:
        """The repository answers and the stanza exists (2 = no backup yet is fine)."""
        return self.status_code in (0, 2)

    def usable(self) -> list[PhysicalBackup]:
        return [b for b in self.backups if not b.error]

    def find(self, backup_id: str) -> PhysicalBackup | None:
        return next((b for b in self.backups if b.id == backup_id), None)


def parse_lsn(text: str) -> int:
    high, low = text.split("/", 1)
    return (int(high, 16) << 32) | int(low, 16)


def parse_history(text: str) -> dict[int, int]:
    """A timeline history file: ``{parent timeline: LSN where it was left}``."""
    ends = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and "/" in fields[1]:
            ends[int(fields[0])] = parse_lsn(fields[1])
    return ends


@dataclasses.dataclass(frozen=True)
class Lineage:
    """The newest timeline in the archive and where its ancestors were left.

    A recovery follows the newest timeline (PostgreSQL's default). A backup
    can start it only if it was taken on that timeline, or on an ancestor and
    finished before the fork: after a point-in-time recovery, the backups of
    the abandoned branch (such as its safety backup) cannot.
    """

    latest: int
    ends: dict[int, int]

    def on_it(self, backup: "PhysicalBackup") -> bool:
        if not backup.wal_start or not re.match(r"^[0-9A-F]{8}", backup.wal_start):
            return True
        tli = int(backup.wal_start[:8], 16)
        if tli == self.latest:
            return True
        if tli not in self.ends:
            return False
        return backup.lsn_stop is None or parse_lsn(backup.lsn_stop) <= self.ends[tli]
