"""A recovery's plan: the target against the window, the backup set, the scratch directory, pgBackRest's options."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import Lineage, StanzaInfo
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_plan import (
    check_confirmation, check_target, pick_set, restore_options, scratch_dir,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import Window

UTC = dt.timezone.utc
START, END = dt.datetime(2025, 11, 2, 1, 0, 41, tzinfo=UTC), dt.datetime(2025, 11, 2, 9, 30, tzinfo=UTC)
WINDOW = Window(START, END, "a", "b")
with open(os.path.join(os.path.dirname(__file__), "pgbackrest_info_sample.json"), encoding="utf-8") as _handle:
    INFO = StanzaInfo.parse(json.load(_handle), "main")


def job(**kw) -> PitrJob:
    return PitrJob.from_params({"target": {"time": "2025-11-02T08:00:00Z"}, **kw})


def test_the_target_must_lie_inside_the_window():
    assert check_target(job(), WINDOW) == dt.datetime(2025, 11, 2, 8, 0, tzinfo=UTC)
    assert check_target(job(target=None, into="drill"), WINDOW) == END  # a drill: the end of the window
    assert check_target(job(target={"end": True}), WINDOW) is None
    with pytest.raises(ConfigError, match="before the oldest backup finished.*Nothing was touched"):
        check_target(job(target={"time": "2025-11-02T01:00:00Z"}), WINDOW)
    with pytest.raises(ConfigError, match="after the newest archived commit.*or target.end for everything archived"):
        check_target(job(target={"time": "2025-11-02T10:00:00Z"}), WINDOW)
    with pytest.raises(ConfigError, match="no usable backup"):
        check_target(job(), Window(None, None, None, None))
    with pytest.raises(ConfigError, match="use target.end or target.immediate"):
        check_target(job(target=None, into="drill"), Window(START, None, "a", None))


def test_the_backup_set_is_on_the_newest_timelines_line():
    line = Lineage(1, {})
    backup_id, off_line = pick_set(job(), INFO, line, dt.datetime(2025, 11, 2, 8, 0, tzinfo=UTC))
    assert not off_line and backup_id in [b.id for b in INFO.usable()]
    chosen = INFO.usable()[0].id
    assert pick_set(job(target={"time": "2025-11-02T08:00:00Z", "backup_set": chosen}), INFO, line, None) == (chosen, False)
    with pytest.raises(ConfigError, match="ended before 2025-11-01T00:00:00Z"):
        pick_set(job(), INFO, line, dt.datetime(2025, 11, 1, tzinfo=UTC))


def test_restore_options_for_each_target_and_place():
    at = dt.datetime(2025, 11, 2, 8, 0, tzinfo=UTC)
    scratch = restore_options(job(), at, "/s", "SET")
    assert scratch == ["--type=time", "--target=2025-11-02 08:00:00.000000+00", "--target-action=promote", "--set=SET",
                       "--pg1-path=/s", "--archive-mode=off", "--tablespace-map-all=/s.tablespaces"]
    live = restore_options(job(target={"end": True}, into="live"), None, "/d")
    assert live == ["--type=default", "--pg1-path=/d", "--delta", "--link-all"]  # end: no target action
    named = restore_options(job(target={"name": "before"}), None, "/s", "SET", True)
    assert named[:3] == ["--type=name", "--target=before", "--target-action=promote"]
    assert "--recovery-option=recovery_target_timeline=current" in named


def test_live_needs_the_stanzas_name_and_scratch_an_empty_new_directory(tmp_path):
    with pytest.raises(ConfigError, match="no confirmation was given: set confirm=main"):
        check_confirmation(job(into="live"))
    with pytest.raises(ConfigError, match="confirm='prod' does not match"):
        check_confirmation(job(into="live", stanza="main", confirm="prod"))
    check_confirmation(job(into="live", confirm="main"))
    check_confirmation(job())  # scratch: nothing to confirm
    live = tmp_path / "data"
    live.mkdir()
    assert scratch_dir(job(live={"data_dir": str(live)}, scratch={"dir": str(tmp_path / "new")})) == str(tmp_path / "new")
    with pytest.raises(ConfigError, match="is the live data directory"):
        scratch_dir(job(live={"data_dir": str(live)}, scratch={"dir": str(live)}))
    (live / "PG_VERSION").write_text("15\n")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        scratch_dir(job(live={"data_dir": str(tmp_path / "other")}, scratch={"dir": str(live)}))
    with pytest.raises(ConfigError, match="too long"):
        scratch_dir(job(live={"data_dir": str(live)}, scratch={"dir": str(tmp_path / ("x" * 100))}))


def test_xid_lsn_and_exclusive_restore_options():
    xid = restore_options(job(target={"xid": "7395", "exclusive": True}), None, "/s", "SET")
    assert xid[:4] == ["--type=xid", "--target=7395", "--target-exclusive", "--target-action=promote"]
    lsn = restore_options(job(target={"lsn": "0/3000060"}), None, "/s")
    assert lsn[:3] == ["--type=lsn", "--target=0/3000060", "--target-action=promote"]
    assert "--target-exclusive" not in lsn
    assert restore_options(job(target={"immediate": True}), None, "/s")[:2] == ["--type=immediate", "--target-action=promote"]


def test_lsn_and_xid_targets_start_from_a_backup_that_reaches_them():
    line = Lineage(1, {})
    full, incr = "20251102-010002F", "20251102-010002F_20251102-070001I"
    # pgBackRest would take the newest backup; for an LSN inside the first one's WAL that one must be used
    assert pick_set(job(target={"lsn": "0/4000000"}), INFO, line, None) == (full, False)
    assert pick_set(job(target={"lsn": "0/5000100"}), INFO, line, None) == (incr, False)
    with pytest.raises(ConfigError, match="target.lsn 0/3000000 lies before the end of every backup.*later location"):
        pick_set(job(target={"lsn": "0/3000000"}), INFO, line, None)
    # an xid's commit time is unknown to the repository: the oldest backup reaches it; backup_set overrides
    assert pick_set(job(target={"xid": "900"}), INFO, line, None) == (full, False)
    assert pick_set(job(target={"xid": "900", "backup_set": incr}), INFO, line, None) == (incr, False)
