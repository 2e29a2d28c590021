"""The pgBackRest runner (argv, stanza names) and the PITR job's options."""
from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import PgBackRest
from ansible_collections.doctorq.backup.plugins.module_utils.pitr import PitrJob

UTC = dt.timezone.utc


# --------------------------------------------------------------------------
# the runner


def test_argv_is_pgbackrests_own_with_the_config_and_stanza():
    engine = PgBackRest("/etc/pgbackrest/pgbackrest.conf", "main", binary="/bin/true")
    argv = engine.argv("backup", "--type=incr")
    assert argv[0] == "/bin/true", "pgBackRest's own argv: procs runs it as the database OS user"
    assert argv[1:3] == ["--config=/etc/pgbackrest/pgbackrest.conf", "--stanza=main"]
    assert argv[-2:] == ["--type=incr", "backup"]
    assert engine.argv("archive-get", params=("000000010000000000000001", "/tmp/x"))[-3:] == [
        "archive-get", "000000010000000000000001", "/tmp/x"]


def test_bad_stanza_names_are_refused():
    with pytest.raises(ConfigError, match="stanza"):
        PgBackRest("/c", "main; rm -rf /", binary="/bin/true")


# --------------------------------------------------------------------------
# PITR options


def pitr(**kw):
    base = dict(target="time", target_time="2025-11-07T10:42:00Z", backup_dir="/b")
    base.update(kw)
    return PitrJob.from_params(base)


def test_pitr_options():
    job = pitr()
    assert job.target_time == dt.datetime(2025, 11, 7, 10, 42, tzinfo=UTC) and job.into == "scratch" and job.keep_scratch
    assert pitr(target_time="2025-11-07 12:42:00+02:00").target_time == job.target_time
    assert pitr(target_time="2025-11-07T10:42:00").target_time == job.target_time  # UTC without an offset
    drill = pitr(target=None, target_time=None, drill=True)
    assert drill.target == "time" and drill.target_time is None and not drill.keep_scratch
    with pytest.raises(ConfigError, match="needs target_time"):
        pitr(target_time=None)
    with pytest.raises(ConfigError, match="not a date"):
        pitr(target_time="yesterday")
    with pytest.raises(ConfigError, match="only used with target=time"):
        pitr(target="end")
    with pytest.raises(ConfigError, match="target_name"):
        pitr(target="name", target_time=None)
    with pytest.raises(ConfigError, match="never touches the live"):
        pitr(drill=True, into="live")
