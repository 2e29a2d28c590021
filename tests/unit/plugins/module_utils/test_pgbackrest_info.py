"""pgBackRest's catalog parsed: ``pgbackrest info --output=json`` and the timeline lineage of the archive."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgBackRestError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import (
    Lineage, StanzaInfo, parse_history, parse_lsn,
)

# two clusters in one stanza (an upgrade from 14 to 15): a full and an incremental backup of the current one
with open(os.path.join(os.path.dirname(__file__), "pgbackrest_info_sample.json"), encoding="utf-8") as _handle:
    INFO = json.load(_handle)


def test_info_keeps_the_current_cluster_only_oldest_first():
    info = StanzaInfo.parse(INFO, "main")
    assert [b.id for b in info.backups] == ["20251102-010002F", "20251102-010002F_20251102-070001I"]
    assert (info.pg_version, info.system_id, info.archive_max) == ("15", 8, "00000002000000000000000A")
    incr = info.backups[-1]
    assert (incr.level, incr.prior, incr.repo_delta, incr.delta) == ("incr", "20251102-010002F", 400, 8000)
    assert incr.summary()["started_at"] == "2025-11-02T07:00:01Z"
    assert info.find("20251102-010002F").level == "full"
    assert info.ok and info.find("nope") is None


def test_summary_says_id_and_level_and_until_1_0_0_the_keys_of_before():
    full, incr = StanzaInfo.parse(INFO, "main").backups
    summary = incr.summary()
    assert (summary["id"], summary["level"], summary["prior"]) == (incr.id, "incr", full.id)
    # docs/DESIGN.md, "Words": label, kind (in its words of before) and type stay beside them until 1.0.0
    assert (summary["label"], summary["kind"], summary["type"]) == (incr.id, "incremental", "incr")
    assert (full.summary()["level"], full.summary()["kind"]) == ("full", "physical_full")
    assert {"database", "stanza", "requested_kind"}.isdisjoint(summary)


def test_a_stanza_info_does_not_list_is_an_error_naming_it():
    with pytest.raises(PgBackRestError, match="does not list stanza 'other'"):
        StanzaInfo.parse(INFO, "other")


def test_only_backups_on_the_newest_timelines_line_can_start_a_recovery():
    # timeline 2 branched off timeline 1 at 0/C0001B8 (a point-in-time recovery)
    history = "1\t0/C0001B8\tbefore 2025-11-02 10:42:00.000001+00\n"
    line = Lineage(2, parse_history(history))
    assert line.ends == {1: parse_lsn("0/C0001B8")} and parse_lsn("1/0") == 1 << 32
    info = StanzaInfo.parse(INFO, "main")
    before_fork, after_fork = info.backups  # stop at 0/3000050 and 0/5000100, on timeline 1
    assert line.on_it(before_fork)
    abandoned = dataclasses.replace(after_fork, lsn_stop="0/D000100")
    assert not line.on_it(abandoned)
    assert line.on_it(dataclasses.replace(after_fork, wal_start="00000002000000000000000E", lsn_stop="0/E000100"))
    assert not Lineage(3, {2: 5}).on_it(before_fork)  # timeline 1 is no ancestor of that timeline 3
