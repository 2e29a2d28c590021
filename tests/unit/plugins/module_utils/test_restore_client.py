"""restore_client without servers: pg_restore's errors sorted, its "unsupported version" explained, the version check.

The real tools are exercised by tests/integration/test_newer_client.py (pg_dump 17 against PostgreSQL 15).
"""
from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import restore_client
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, iso
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError

TIMEOUT = ('pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter '
           '"transaction_timeout"\nCommand was: SET transaction_timeout = 0;\n')
IGNORED = "pg_restore: warning: errors ignored on restore: 2\n"
OTHER = ('pg_restore: error: could not execute query: ERROR:  relation "t" already exists\n'
         'Command was: CREATE TABLE public.t (a integer);\n')


def test_only_the_unknown_settings_are_harmless():
    harmless = ("transaction_timeout",)
    assert restore_client.real_errors(TIMEOUT * 3 + IGNORED, harmless) == []
    assert restore_client.restored_anyway(1, TIMEOUT * 3 + IGNORED, harmless)
    assert restore_client.real_errors(TIMEOUT + OTHER + IGNORED, harmless) == [
        'could not execute query: ERROR:  relation "t" already exists (command: CREATE TABLE public.t (a integer);)']
    assert not restore_client.restored_anyway(1, TIMEOUT + OTHER + IGNORED, harmless)
    assert not restore_client.restored_anyway(1, TIMEOUT, harmless)  # stopped before its end
    assert not restore_client.restored_anyway(1, "pg_restore: warning: errors ignored on restore: 0\n", harmless)
    assert not restore_client.restored_anyway(2, TIMEOUT + IGNORED, harmless)
    assert not restore_client.restored_anyway(1, TIMEOUT + IGNORED, ())  # a server that knows every setting
    # the setting named in a message of another statement is no excuse
    sneaky = ('pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter '
              '"transaction_timeout"\nCommand was: SELECT 1;\n')
    assert restore_client.real_errors(sneaky + IGNORED, harmless)


def test_harmless_errors_are_the_settings_between_the_server_and_the_client(monkeypatch):
    class Pg:  # pylint: disable=too-few-public-methods
        def __init__(self, major: int) -> None:
            self.major = major

        def server_version(self):
            return self.major, str(self.major)

    for client, server, expected in ((17, 15, ("transaction_timeout",)), (17, 17, ()), (16, 15, ()), (15, 15, ())):
        monkeypatch.setattr(restore_client, "client_major", lambda _path, c=client: c)
        assert restore_client.harmless_errors(Pg(server), "pg_restore") == expected, (client, server)


def test_unsupported_version_is_explained(monkeypatch):
    monkeypatch.setattr(restore_client, "client_major", lambda _path: 15)
    msg = restore_client.unreadable("pg_restore: error: unsupported version (1.16) in file header\n", "/x/pg_restore")
    assert "pg_restore 15 (/x/pg_restore)" in msg and "archive version 1.16" in msg and "(17 or later)" in msg
    assert "postgresql-client-17" in msg and "pg_bin_dir" in msg
    assert restore_client.unreadable(OTHER, "/x/pg_restore") is None


def test_reader_refuses_a_pg_restore_older_than_the_pg_dump(monkeypatch):
    class Pg:  # pylint: disable=too-few-public-methods
        @staticmethod
        def tool(name: str) -> str:
            return f"/usr/lib/postgresql/15/bin/{name}"

    when = iso(dt.datetime(2025, 11, 7, tzinfo=dt.timezone.utc))
    made = Manifest(id="db_full_20251107_000000", name="db", kind="daily", started_at=when, finished_at=when,
                    duration_s=1.0, file="db_full_20251107_000000.dump.zst", size=1, sha256="e" * 64, md5="f" * 32,
                    compression="zstd", compression_level=3, pg_dump_version=17)
    monkeypatch.setattr(restore_client, "client_major", lambda _path: 15)
    with pytest.raises(ConfigError, match=r"written by pg_dump 17, and pg_restore 15 .*postgresql-client-17.*"
                                          r"no safety backup taken"):
        restore_client.reader(Pg(), made)
    for wrote in (15, 14, 0):  # older, or not recorded: pg_restore decides
        assert restore_client.reader(Pg(), Manifest(**{**made.__dict__, "pg_dump_version": wrote})).endswith("pg_restore")
