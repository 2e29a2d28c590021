"""The pgBackRest runner (argv, stanza names); the PITR job's options are tested in test_pitr_options.py."""
from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import PgBackRest


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
