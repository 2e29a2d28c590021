# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a disaster would lose now: a PITR drill's honest RPO, measured before the drill seals the window.

A drill commits its own transaction and forces a WAL switch so that "now" is
a reachable target; measured after that, the recovery point is always about
0 s old and says nothing about the exposure. So the drill measures first,
touching nothing: the newest commit that reached the repository (archived
WAL read with ``archive-get`` + ``pg_waldump``) against the drill's start.
When the live server answers and has assigned no transaction ID since that
commit, nothing committed since is missing from the archive and the
exposure is 0 (an idle cluster is not behind); otherwise it is that
commit's age, or the newest backup's age when that backup ended later (what
committed before a backup's end comes back with it, archived commit or not:
right after a backup the newest segments often hold no commit at all).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import PgBackRest
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import StanzaInfo
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_cluster import Sql
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import ArchivedCommit, iso_us, newest_archived_commit

# pg_waldump shows 32-bit transaction IDs; txid_current_snapshot() 64-bit ones (with the epoch).
XID_MOD = 2 ** 32


@dataclasses.dataclass(frozen=True)
class Exposure:
    """The archive's lag at ``measured_at``: ``seconds`` is what a disaster then would lose (None: unknown)."""

    measured_at: dt.datetime
    commit: ArchivedCommit | None
    next_xid: int | None = None
    backup_end: dt.datetime | None = None  # the newest usable backup's end: recoverable without any archived commit

    @property
    def recoverable(self) -> dt.datetime | None:
        """The newest point a recovery surely reaches: the newest archived commit or the newest backup's end."""
        points = [p for p in (self.commit.at if self.commit else None, self.backup_end) if p is not None]
        return max(points) if points else None

    @property
    def idle(self) -> bool:
        """No transaction ID assigned on the live server since the newest archived commit."""
        return (self.commit is not None and self.commit.xid is not None and self.next_xid is not None
                and (self.next_xid - 1) % XID_MOD == self.commit.xid)

    @property
    def age(self) -> float | None:
        """Seconds from the newest recoverable point to the measurement."""
        if self.recoverable is None:
            return None
        return round(max(0.0, (self.measured_at - self.recoverable).total_seconds()), 3)

    @property
    def seconds(self) -> float | None:
        return 0.0 if self.idle else self.age

    def describe(self) -> str:
        if self.recoverable is None:
            return "unknown: no commit found in the newest archived WAL and no backup"
        if self.commit is None or (self.backup_end is not None and self.backup_end > self.commit.at):
            newest = f"newest backup's end {iso_us(self.backup_end)}, no archived commit after it"
        else:
            newest = f"newest archived commit {iso_us(self.commit.at)} (segment {self.commit.segment})"
        if self.idle:
            return f"0s: nothing committed since the {newest}"
        unasked = "" if self.next_xid is not None else ", the live server not asked whether anything committed since"
        return f"{self.age:.1f}s: the {newest}{unasked}"

    def summary(self) -> dict[str, Any]:
        return {"measured_at": iso_us(self.measured_at), "seconds": self.seconds,
                "newest_archived_commit": iso_us(self.commit.at) if self.commit else None,
                "newest_archived_xid": self.commit.xid if self.commit else None,
                "segment": self.commit.segment if self.commit else None,
                "newest_backup_end": iso_us(self.backup_end) if self.backup_end else None,
                "age_seconds": self.age, "idle": self.idle}


def next_xid(sql: Sql | None) -> int | None:
    """The live server's next transaction ID (read-only; a standby answers with what it replayed), None if unknown."""
    if sql is None:
        return None
    try:
        (row,) = sql.query("SELECT txid_snapshot_xmax(txid_current_snapshot())::text AS next_xid")
        return int(row["next_xid"])
    except (DoctorqError, ValueError, TypeError, KeyError):
        return None


def measure_exposure(pgbr: PgBackRest, info: StanzaInfo, sql: Sql | None, measured_at: dt.datetime, *,
                     bin_dir: str | None = None) -> Exposure:
    """The exposure now, without a commit or a WAL switch of its own (``sql``: the live server, or None).

    The server is asked first: a transaction committing between the two
    reads then shows as a newer ID, never as an idle cluster. (A
    transaction older than the newest archived one that commits after it,
    with no ID assigned since, would pass unseen: a narrow case a busy
    cluster leaves at once.)
    """
    xid = next_xid(sql)
    ends = [b.stopped for b in info.usable()]
    return Exposure(measured_at, newest_archived_commit(pgbr, info, bin_dir=bin_dir), xid, max(ends) if ends else None)
