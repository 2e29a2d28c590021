"""The recoverable window: from the oldest usable backup to the newest archived commit, on the newest timeline."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import Lineage, StanzaInfo, parse_lsn
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import (
    ArchivedCommit, last_commit_in_waldump, newest_commit_in_waldump, previous_segment, window_of,
)

UTC = dt.timezone.utc
with open(os.path.join(os.path.dirname(__file__), "pgbackrest_info_sample.json"), encoding="utf-8") as _handle:
    INFO = json.load(_handle)


def test_window_from_oldest_backup_end_to_just_before_the_newest_commit():
    info = StanzaInfo.parse(INFO, "main")
    last = dt.datetime(2025, 11, 2, 9, 30, 0, 500000, tzinfo=UTC)
    window = window_of(info, last)
    assert window.start == dt.datetime(2025, 11, 2, 1, 0, 41, tzinfo=UTC)  # stop 01:00:40 + 1 s
    assert window.end == last - dt.timedelta(microseconds=1)
    assert window.contains(dt.datetime(2025, 11, 2, 8, 0, tzinfo=UTC))
    assert not window.contains(dt.datetime(2025, 11, 2, 1, 0, 40, tzinfo=UTC))
    assert not window.contains(last)  # no commit after it: PostgreSQL would never stop
    chosen = window_of(info, last, "20251102-010002F_20251102-070001I")
    assert chosen.start == dt.datetime(2025, 11, 2, 7, 0, 5, tzinfo=UTC)
    with pytest.raises(ConfigError, match="not a usable backup"):
        window_of(info, last, "nope")
    assert window_of(info, None).end is None


def test_no_backup_ended_before_the_fork_means_no_window():
    info = StanzaInfo.parse(INFO, "main")
    window = window_of(info, None, line=Lineage(2, {1: parse_lsn("0/2000000")}))
    assert window.start is None and window.describe() == "no backup to recover from"


def test_last_commit_from_waldump_output():
    text = """
rmgr: Heap        len (rec/tot):     54/    54, tx:        726, lsn: 0/06001B90, prev 0/06001B58, desc: INSERT off 3
rmgr: Transaction len (rec/tot):     34/    34, tx:        727, lsn: 0/06001BD8, prev 0/06001B90, desc: COMMIT 2026-11-27 14:03:12.891734 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        728, lsn: 0/06001C00, prev 0/06001BD8, desc: ABORT 2026-11-27 14:03:12.963539 UTC
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/06001C90, prev 0/06001C28, desc: SWITCH
"""
    assert last_commit_in_waldump(text) == dt.datetime(2026, 11, 27, 14, 3, 12, 963539, tzinfo=UTC)
    assert last_commit_in_waldump("desc: COMMIT 2026-11-27 16:03:12 +02") == dt.datetime(2026, 11, 27, 14, 3, 12, tzinfo=UTC)
    assert last_commit_in_waldump("desc: CHECKPOINT_ONLINE redo 0/2000028") is None
    # the transaction ID of the last one too (a drill's exposure asks the live server what came after it)
    assert newest_commit_in_waldump(text) == ArchivedCommit(dt.datetime(2026, 11, 27, 14, 3, 12, 963539, tzinfo=UTC), 728)
    with_subxacts = text.replace("desc: ABORT 2026-11-27 14:03:12.963539 UTC",
                                 "desc: COMMIT 2026-11-27 14:03:13.000001 UTC; subxacts: 729 730")
    assert newest_commit_in_waldump(with_subxacts).xid == 728
    assert newest_commit_in_waldump("desc: COMMIT 2026-11-27 16:03:12 +02").xid is None


def test_previous_segment():
    assert previous_segment("000000010000000000000005") == "000000010000000000000004"
    assert previous_segment("000000010000000200000000") == "0000000100000001000000FF"
    assert previous_segment("000000010000000000000000") is None
    assert previous_segment("00000002.history") is None
