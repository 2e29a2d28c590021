# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A session holding a table's exclusive lock (a migration left open) costs a backup ``lock_wait_timeout``, not the night.

pg_dump takes ACCESS SHARE on every table before it reads any, and by default
waits for ever behind a conflicting lock: the run hangs, and every later run
finds the job's lock taken. Here a real session holds ACCESS EXCLUSIVE on a
table while pg_backup runs, as a module and as a directory backup.
"""
from __future__ import annotations

import glob
import os
import time

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, _Run
from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient

pytestmark = pytest.mark.faults


@pytest.fixture(name="locked_table")
def fixture_locked_table(pg_server, pg_db):
    """A session inside a transaction holding ACCESS EXCLUSIVE on one of ``pg_db``'s tables; its pid."""
    conn = pg_server.connect(pg_db)
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE' "
                    "ORDER BY 1 LIMIT 1")
        table = cur.fetchone()[0]
        cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    yield table, pid
    conn.rollback()
    conn.close()


@pytest.mark.parametrize("jobs", [1, 2], ids=["single-stream", "directory"])
def test_a_table_locked_by_another_session_fails_the_backup_at_lock_wait_timeout(
        jobs, locked_table, pg_server, pg_db, run_module, tmp_path):
    table, blocker = locked_table
    backup_dir = tmp_path / "backups"
    params = {**pg_server.params(pg_db), "backup_dir": str(backup_dir), "lock_wait_timeout": 2, "jobs": jobs,
              "compression": "gzip"}
    started = time.monotonic()
    result = run_module("pg_backup", params)
    assert time.monotonic() - started < 60
    assert result.get("failed"), result
    msg = result["msg"]
    assert "lock_wait_timeout=2" in msg and str(blocker) in msg, msg  # the option to raise and the session to look at
    assert table.split(".")[-1].strip('"') in msg, msg
    assert msg.count(str(blocker)) == 1 and "pg_terminate_backend" in msg
    assert "pg_backend_pid" not in msg  # the blocker's query text (which may carry a secret) is never shown
    # nothing listed, nothing half-written left
    assert glob.glob(str(backup_dir / "*.manifest.json")) == []
    left = [os.path.relpath(os.path.join(d, n), backup_dir) for d, _dirs, files in os.walk(backup_dir) for n in files]
    assert [n for n in left if not n.startswith("backup_") and not n.endswith(".lock")] == []


def test_pg_dump_giving_up_on_a_lock_fails_the_run_naming_the_session(locked_table, pg_server, pg_db):
    # the table locked after the run's own reads (a race): pg_dump's --lock-wait-timeout is what fires
    table, blocker = locked_table
    job = BackupJob.from_params({**pg_server.params(pg_db), "backup_dir": "/nonexistent", "lock_wait_timeout": 1})
    run = _Run(job, None, None)
    with PgClient(job.conn) as pg:
        argv = run.dump_argv(pg)
        assert "--lock-wait-timeout=1s" in argv
        with pytest.raises(PgError) as failed, run.lock_waits(pg):
            procs.run(argv + ["--file=/dev/null", pg_db], env=pg.env(pg_db), timeout=60)
    assert "lock_wait_timeout=1" in str(failed.value) and f"session {blocker}" in str(failed.value)
    assert table.split(".")[-1] in str(failed.value)


def test_a_negative_lock_wait_timeout_is_refused_before_any_work(pg_server, pg_db, run_module, tmp_path):
    result = run_module("pg_backup", {**pg_server.params(pg_db), "backup_dir": str(tmp_path / "b"),
                                      "lock_wait_timeout": -1})
    assert result.get("failed") and "lock_wait_timeout is -1" in result["msg"] and "0 to wait for ever" in result["msg"]
    assert not os.path.exists(tmp_path / "b")
