"""Globals restored onto a server that has some of them (restore_globals.py): existing ones are left out."""
from __future__ import annotations

from ansible_collections.doctorq.backup.plugins.module_utils.restore_globals import skip_existing

SCRIPT = (b"SET default_transaction_read_only = off;\n"
          b"CREATE ROLE postgres;\n"
          b"ALTER ROLE postgres WITH SUPERUSER LOGIN;\n"
          b'CREATE ROLE "App ""Owner""";\n'
          b"CREATE ROLE reporting;\n"
          b"CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';\n"
          b"CREATE TABLESPACE slow OWNER postgres LOCATION '/srv/slow';\n")


def test_existing_roles_and_tablespaces_are_left_out_and_counted():
    script, skipped = skip_existing(SCRIPT, {"postgres", 'App "Owner"'}, {"fast"})
    assert skipped == 3
    assert script == (b"SET default_transaction_read_only = off;\n"
                      b"ALTER ROLE postgres WITH SUPERUSER LOGIN;\n"
                      b"CREATE ROLE reporting;\n"
                      b"CREATE TABLESPACE slow OWNER postgres LOCATION '/srv/slow';\n")


def test_a_role_and_a_tablespace_of_one_name_are_told_apart():
    script, skipped = skip_existing(SCRIPT, set(), {"reporting", "postgres"})
    assert (script, skipped) == (SCRIPT, 0)
