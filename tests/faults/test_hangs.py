# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 4: no server can hold a run for ever; every network call has a total deadline.

- A webhook server that sends one byte every 2 s (a per-read timeout never
  fires) costs the run at most the webhook's deadline, and only a warning.
- An S3 endpoint that accepts TCP and never answers fails within about
  ``s3.max_attempts`` x ``s3.timeout``; one that answers a byte a second
  within each call's total deadline (``s3.call_deadline``); either way the
  backup is complete on disk and the run fails naming S3.
- A PostgreSQL host that accepts TCP and never answers fails within about
  ``connect_timeout``, saying it could not connect; a ``connect_timeout``
  that would let libpq wait for ever (below 1) is refused before any work.

Each run happens in a thread joined with a bound, so a regression fails the
test instead of hanging the suite.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any, Callable

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.notify import WEBHOOK_DEADLINE_S
from backup_support import Trickle, backup_files, read_json, silent_port

pytestmark = pytest.mark.faults


def job_params(pg_server, db: str, backup_dir, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": str(backup_dir), **extra}


def bounded(call: Callable[[], dict[str, Any]], limit: float) -> tuple[dict[str, Any], float]:
    """``call()`` in a thread; its result and how long it took, or a failure when it is still running at ``limit``."""
    outcome: dict[str, Any] = {}
    started = time.monotonic()
    worker = threading.Thread(target=lambda: outcome.update(result=call()), daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"the run still hangs after {limit:.0f} s"
    assert "result" in outcome, "the run raised instead of returning a result"
    return outcome["result"], time.monotonic() - started


def test_a_trickling_webhook_costs_a_complete_backup_only_a_warning(pg_server, pg_db, tmp_path):
    token = secrets.token_urlsafe(16)
    server = Trickle(interval=2.0)
    try:
        params = job_params(pg_server, pg_db, tmp_path / "backups", notification={"webhook_url": f"{server.url}/hook/{token}"})
        result, elapsed = bounded(lambda: run_backup(BackupJob.from_params(params)), WEBHOOK_DEADLINE_S + 30)
    finally:
        server.close()
    assert server.connections >= 1  # the webhook was tried
    assert not result.get("failed"), result.get("msg")
    assert read_json(result["backup"]["path"] + ".manifest.json")["sha256"] == result["backup"]["sha256"]
    [warning] = [w for w in result["warnings"] if "webhook" in w]
    assert f"within {WEBHOOK_DEADLINE_S:g} s" in warning and "not affected" in warning
    assert token not in warning and token not in "\n".join(result["log"])
    # the deadline is total: the backup itself takes a second or two, the webhook at most its deadline
    assert WEBHOOK_DEADLINE_S <= elapsed < WEBHOOK_DEADLINE_S + 10


def test_a_silent_s3_endpoint_fails_within_its_timeout_and_the_local_backup_is_kept(pg_server, pg_db, run_module, tmp_path):
    backup_dir = tmp_path / "backups"
    with silent_port() as port:
        s3 = {"bucket": "anything", "endpoint_url": f"http://127.0.0.1:{port}", "access_key": "AK",
              "secret_key": "SK-" + secrets.token_hex(8), "max_attempts": 2, "timeout": 2}
        result, elapsed = bounded(lambda: run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3)), 60)
    # 2 attempts of at most 2 s each, jittered backoff between them, then the run goes on without S3
    assert elapsed < 20
    assert result["failed"]
    msg = result["msg"]
    assert msg.startswith("S3 access check (HEAD bucket) failed for s3://anything") and "did not answer" in msg
    assert "s3.timeout" in msg and f"The local backup {result['backup']['path']} is complete and kept" in msg
    assert s3["secret_key"] not in msg
    manifest = read_json(result["backup"]["path"] + ".manifest.json")
    assert manifest["s3"] is None and manifest["sha256"] == result["backup"]["sha256"]


def test_a_trickling_s3_endpoint_fails_at_its_call_deadline_and_the_local_backup_is_kept(pg_server, pg_db, run_module,
                                                                                         tmp_path):
    backup_dir = tmp_path / "backups"
    trickle = Trickle(interval=1.0)  # one byte a second: every read is within s3.timeout, the answer never ends
    try:
        s3 = {"bucket": "anything", "endpoint_url": trickle.url, "access_key": "AK",
              "secret_key": "SK-" + secrets.token_hex(8), "max_attempts": 2, "timeout": 3}
        result, elapsed = bounded(lambda: run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3)), 90)
    finally:
        trickle.close()
    # 2 attempts of connect 3 + read 3, a backoff of at most 2 s: the call's deadline is 14 s
    assert elapsed < 45
    assert result["failed"]
    msg = result["msg"]
    assert msg.startswith("S3 HeadBucket did not finish within 14 s") and "s3.timeout" in msg
    assert f"The local backup {result['backup']['path']} is complete and kept" in msg
    manifest = read_json(result["backup"]["path"] + ".manifest.json")
    assert manifest["s3"] is None and manifest["sha256"] == result["backup"]["sha256"]


def test_a_silent_postgresql_host_fails_within_connect_timeout(pg_server, pg_db, run_module, tmp_path):
    backup_dir = tmp_path / "backups"
    with silent_port() as port:
        params = job_params(pg_server, pg_db, backup_dir, login_host="127.0.0.1", login_port=port, connect_timeout=2)
        result, elapsed = bounded(lambda: run_module("pg_backup", params), 30)
    assert elapsed < 8
    assert result["failed"]
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in result["msg"] and "timeout" in result["msg"]
    assert pg_server.password not in result["msg"]
    assert backup_files(str(backup_dir)) == []


@pytest.mark.parametrize("value", [0, -1])
def test_a_connect_timeout_that_never_expires_is_refused_before_any_work(value, pg_server, pg_db, run_module, tmp_path):
    """libpq waits for ever with 0 or less: against a silent host that is a run that never ends."""
    backup_dir = tmp_path / "backups"
    with silent_port() as port:
        params = job_params(pg_server, pg_db, backup_dir, login_host="127.0.0.1", login_port=port,
                            connect_timeout=value)
        result, elapsed = bounded(lambda: run_module("pg_backup", params), 30)
    assert elapsed < 5
    assert result["failed"] and "connect_timeout" in result["msg"] and "at least 1" in result["msg"]
    assert not os.path.exists(backup_dir)
