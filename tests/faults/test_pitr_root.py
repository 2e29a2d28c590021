"""Issue 11, case 14: a live point-in-time recovery run as root against Debian's peer authentication.

Debian's pg_hba.conf lets the OS user postgres in through the unix socket
(``local all all peer``) and nobody else. A run as root (``become: true``)
connecting through that socket as ``postgres`` is refused by the server,
so a check made over that connection took a running server for a dead one:
no safety backup, the cluster stopped and replaced, then an hour of waiting
for a promotion it could not see. Liveness and promotion are read as the
cluster's OS user, and the few queries PITR makes go through ``psql`` as
that user when root cannot log in; a running server nobody can reach is
refused before anything is touched.

Reuses the pgBackRest bed of tests/integration/test_pgbackrest.py (its own
TLS SeaweedFS, an archiving PostgreSQL, a stanza, one full backup) and
switches its local connections to peer authentication.
"""

from __future__ import annotations

import os
import pwd
import secrets
import time
from typing import Any

import pytest

from integration.test_pgbackrest import STANZA, base_backup, bed, write_rows  # noqa: F401  # pylint: disable=unused-import
from testbed import PgServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fault is a run as root (CI runs as root)")

PITR_TIMEOUT = 30


@pytest.fixture(scope="module")
def peer_bed(bed: dict[str, Any]) -> dict[str, Any]:  # pylint: disable=redefined-outer-name
    """The bed's cluster with Debian's default local authentication: peer, nothing else, on the socket."""
    server: PgServer = bed["server"]
    hba = os.path.join(server.data_dir, "pg_hba.conf")
    with open(hba, "w", encoding="utf-8") as handle:
        handle.write("local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n")
    entry = pwd.getpwnam("postgres")
    os.chown(hba, entry.pw_uid, entry.pw_gid)
    server.query("SELECT pg_reload_conf()")
    import psycopg2  # pylint: disable=import-outside-toplevel

    with pytest.raises(psycopg2.OperationalError, match="Peer authentication failed"):
        psycopg2.connect(host=server.socket_dir, port=server.port, user="postgres", dbname="postgres").close()
    return bed


def socket_args(peer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What an operator on Debian gives: the socket, the postgres role, no password."""
    server: PgServer = peer["server"]
    return {"login_unix_socket": server.socket_dir, "login_port": server.port, "login_user": "postgres",
            "stanza": STANZA, "pgbackrest_config": peer["config"], "log_dir": peer["backup_dir"],
            "into": "live", "confirm": STANZA, "timeout": PITR_TIMEOUT, **extra}


def test_live_pitr_as_root_with_peer_authentication(peer_bed, base_backup, run_module, tmp_path):  # pylint: disable=redefined-outer-name
    server: PgServer = peer_bed["server"]
    table = f"pitr_peer_{secrets.token_hex(3)}"
    write_rows(server, table)  # rows 11-20 are in WAL not yet archived: only sealing the window recovers them
    started_before = server.query("SELECT pg_postmaster_start_time()")[0][0]
    began = time.monotonic()
    result = run_module("pg_pitr_restore", socket_args(peer_bed, target={"end": True}))
    took = time.monotonic() - began
    assert not result.get("failed"), result.get("msg")
    assert any("The live server" in line and " is up" in line for line in result["log"]), result["log"]
    assert result["safety_backup"], "the running server got its safety backup before it was replaced"
    assert any("as the OS user postgres" in line for line in result["log"]), "root's refused login was worked around"
    assert any("Sealed the window" in line for line in result["log"]), result["log"]
    assert server.query(f"SELECT count(*), max(id) FROM {table}") == [(20, 20)], "every row committed before the run"
    assert server.query("SELECT pg_postmaster_start_time()")[0][0] > started_before, "the server was restarted"
    assert result["recovery"]["in_recovery"] is False and result["recovery"]["databases"]["postgres"] >= 1
    assert took < PITR_TIMEOUT + 60, f"the promotion was seen at once, not after timeout ({took:.0f}s)"

    # A server that runs but that no route reaches (a wrong socket directory) is refused, the cluster untouched.
    started_before = server.query("SELECT pg_postmaster_start_time()")[0][0]
    wrong = str(tmp_path)
    refused = run_module("pg_pitr_restore", socket_args(peer_bed, target={"end": True}, login_unix_socket=wrong))
    assert refused.get("failed"), refused.get("log")
    assert f"PostgreSQL runs on {server.data_dir}" in refused["msg"], refused["msg"]
    assert "login_unix_socket" in refused["msg"] and "Nothing was touched" in refused["msg"]
    assert not any("pgbackrest restore" in line for line in refused["log"])
    assert server.query("SELECT pg_postmaster_start_time()")[0][0] == started_before, "the server never stopped"
