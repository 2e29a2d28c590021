"""pg_pitr_restore's options: grouped, checked into a PitrJob, and the flat spellings of before translated."""
from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob, translate_legacy

UTC = dt.timezone.utc
AT = dt.datetime(2025, 11, 7, 10, 42, tzinfo=UTC)


def pitr(**kw):
    base = dict(target={"time": "2025-11-07T10:42:00Z"}, log_dir="/b")
    base.update(kw)
    return PitrJob.from_params(base)


def test_targets_and_where():
    job = pitr()
    assert job.target == "time" and job.target_time == AT and job.into == "scratch" and job.keep_scratch
    assert job.log_dir == "/b" and not job.drill
    assert pitr(target={"time": "2025-11-07 12:42:00+02:00"}).target_time == AT
    assert pitr(target={"time": "2025-11-07T10:42:00"}).target_time == AT  # UTC without an offset
    named = pitr(target={"name": "before_migration", "backup_set": "X"})
    assert (named.target, named.target_name, named.backup_set, named.target_time) == ("name", "before_migration", "X", None)
    assert pitr(target={"end": True}).target == "end" and pitr(target={"immediate": True, "end": False}).target == "immediate"
    drill = pitr(target=None, into="drill", drill={"report_dir": "/r", "max_rpo_seconds": 60})
    assert drill.drill and drill.into == "scratch" and drill.target == "time" and drill.target_time is None
    assert not drill.keep_scratch and drill.report_dir == "/r" and drill.max_rpo_seconds == 60
    live = pitr(into="live", live={"data_dir": "/d", "service": "postgresql@15-main", "safety_backup": False},
                scratch={"dir": "/s", "port": 5999, "keep": False})
    assert (live.into, live.data_dir, live.service, live.safety_backup) == ("live", "/d", "postgresql@15-main", False)
    assert (live.scratch_dir, live.scratch_port, live.keep_scratch) == ("/s", 5999, False)
    assert pitr().safety_backup and pitr().max_rpo_seconds == 900 and pitr(log_dir=None).log_dir.endswith("pgbackrest")


@pytest.mark.parametrize("kw, needle", [
    (dict(target=None), "target is required"),
    (dict(target={}), "target is required"),
    (dict(target={"time": "yesterday"}), "not a date"),
    (dict(target={"time": "2025-11-07T10:42:00Z", "end": True}), "not time and end"),
    (dict(target="time"), "target must be a dictionary"),
    (dict(scratch={"port": 70000}), "scratch.port must be a TCP port"),
    (dict(timeout=5), "at least 10 seconds"),
    (dict(into="nowhere"), "into must be scratch, live or drill"),
])
def test_bad_options_say_what_to_set(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        pitr(**kw)


def test_the_flat_spellings_of_before_are_grouped():
    args, moved = translate_legacy({"target": "time", "target_time": "2025-11-07T10:42:00Z", "scratch_dir": "/s",
                                    "scratch_port": "5999", "keep_scratch": True, "backup_set": "X", "stanza": "main"})
    assert args == {"target": {"time": "2025-11-07T10:42:00Z", "backup_set": "X"}, "stanza": "main",
                    "scratch": {"dir": "/s", "port": "5999", "keep": True}}
    assert ("target_time", "target.time") in moved and ("scratch_dir", "scratch.dir") in moved
    args, moved = translate_legacy({"drill": "true", "report_dir": "/r", "max_rpo_seconds": 60})
    assert args == {"into": "drill", "drill": {"report_dir": "/r", "max_rpo_seconds": 60}}
    assert ("drill", "into=drill") in moved
    args = translate_legacy({"target": "end", "into": "live", "service": "pg", "data_dir": "/d", "safety_backup": False})[0]
    assert args == {"target": {"end": True}, "into": "live", "live": {"service": "pg", "data_dir": "/d", "safety_backup": False}}
    assert translate_legacy({"drill": False, "target": "immediate"})[0] == {"target": {"immediate": True}}
    # the new spellings pass untouched, and nothing is reported
    new = {"target": {"name": "p"}, "into": "drill", "drill": {"report_dir": "/r"}, "scratch": {"dir": "/s"}}
    assert translate_legacy(new) == (new, [])
    with pytest.raises(ConfigError, match="never touches the live cluster"):
        translate_legacy({"drill": True, "into": "live"})
    with pytest.raises(ConfigError, match="scratch must be a dictionary"):
        translate_legacy({"scratch": "dir=/x", "scratch_port": 1})
    job = PitrJob.from_params(translate_legacy({"target": "name", "target_name": "p", "keep_scratch": False})[0])
    assert (job.target, job.target_name, job.keep_scratch) == ("name", "p", False)


def test_xid_and_lsn_targets_are_checked_before_any_work():
    base = {"login_user": "postgres"}
    xid = PitrJob.from_params({**base, "target": {"xid": "7395", "exclusive": True}})
    assert (xid.target, xid.target_xid, xid.target_exclusive) == ("xid", 7395, True)
    lsn = PitrJob.from_params({**base, "target": {"lsn": "0/3000a60"}})
    assert (lsn.target, lsn.target_lsn, lsn.target_exclusive) == ("lsn", "0/3000A60", False)
    for bad in ("0", "-5", "12a", "1.5", " "):
        with pytest.raises(ConfigError, match="is not a transaction ID: give a positive integer"):
            PitrJob.from_params({**base, "target": {"xid": bad}})
    for bad in ("3000060", "0/XYZ", "0/123456789", "/1", "0/"):
        with pytest.raises(ConfigError, match=r"is not a WAL location: .* e\.g\. 0/3000060"):
            PitrJob.from_params({**base, "target": {"lsn": bad}})
    with pytest.raises(ConfigError, match="one of time, name, xid, lsn, immediate or end, not xid and lsn"):
        PitrJob.from_params({**base, "target": {"xid": "5", "lsn": "0/1"}})
    with pytest.raises(ConfigError, match="target.exclusive applies to a time, xid or lsn target, not to target.name"):
        PitrJob.from_params({**base, "target": {"name": "p", "exclusive": True}})
