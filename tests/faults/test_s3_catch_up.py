"""Catch-up on the first run (issue 11, case 12).

A backup made while S3 was down reaches S3 on the next run that reaches it,
even when S3 never held a backup of that database before.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import utcnow
from backup_support import closed_port, read_json, s3_body

DAY = dt.timedelta(days=1)


def test_the_first_good_run_uploads_what_s3_missed_on_the_very_first_one(
        pg_server, pg_db, run_module, tmp_path, s3_bucket, seaweed):
    backup_dir = tmp_path / "backups"
    now = utcnow()
    up: dict[str, Any] = {**pg_server.params(pg_db), "backup_dir": str(backup_dir), "s3": s3_bucket, "weekly": "never"}
    down = {**up, "s3": {**s3_bucket, "endpoint_url": f"http://127.0.0.1:{closed_port()}", "max_attempts": 1}}

    first = run_backup(BackupJob.from_params(down), now=now - DAY)  # the very first backup: S3 unreachable
    assert first["failed"]
    # the message promises what the next run does: it catches this backup up, although S3 holds none yet
    assert "catches up this one too" in first["msg"] and "uploads only its own" not in first["msg"], first["msg"]
    missed = first["backup"]

    plan = run_module("pg_backup", up, check_mode=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["plan"]["would_upload"] == [missed["id"]]

    second = run_backup(BackupJob.from_params(up), now=now)
    assert not second.get("failed"), second.get("msg")
    assert [entry["id"] for entry in second["caught_up"]] == [missed["id"]]
    key = f"postgresql/{pg_db}/{missed['started_at'][:10]}/{missed['file']}"
    with open(missed["path"], "rb") as handle:
        assert s3_body(seaweed.client(), s3_bucket["bucket"], key) == handle.read()
    assert read_json(missed["path"] + ".manifest.json")["s3"]["key"] == key
    # both backups are complete in S3 and pass verification there
    info = run_module("backup_info", {"backup_dir": str(backup_dir), "name": pg_db, "s3": s3_bucket, "verify": True})
    assert not info.get("failed"), info.get("msg")
    in_s3 = {b["id"]: b["verification"]["state"] for b in info["backups"] if b["location"] == "s3"}
    assert in_s3 == {missed["id"]: "verified", second["backup"]["id"]: "verified"}
