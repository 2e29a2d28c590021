# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 2: S3 down is exactly the disaster case, so it must never stop a restore from disk.

Backups are made with SeaweedFS working (so they exist on disk and in S3);
then the same bucket is configured behind a port where nothing listens. The
listing, ``source=latest`` restores of a database and of a file set, and both
kinds of drill must go on from the local copies, saying that S3 was
unavailable and why (result field, warning, run log).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from backup_support import closed_port

S3_DOWN = "the endpoint cannot be reached"


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def unreachable(s3: dict[str, Any]) -> dict[str, Any]:
    """The same bucket, behind a port with nothing listening (one attempt: the test need not wait out retries)."""
    return {**s3, "endpoint_url": f"http://127.0.0.1:{closed_port()}", "max_attempts": 1}


def warned_about_s3(result: dict[str, Any]) -> None:
    assert any("S3" in w and S3_DOWN in w for w in result.get("warnings") or []), result.get("warnings")


@pytest.fixture
def backup_dir(tmp_path) -> str:
    return str(tmp_path / "backups")


@pytest.fixture
def made(pg_server, pg_db, s3_bucket, backup_dir, run_module) -> dict[str, Any]:
    """A complete backup of pg_db on disk and in S3 (made while S3 worked)."""
    result = ok(run_module("pg_backup", {**pg_server.params(pg_db), "backup_dir": backup_dir, "weekly": "never",
                                         "s3": s3_bucket}))["backup"]
    assert result["s3_uri"], result
    return result


def test_listing_shows_local_backups_and_says_s3_is_unavailable(made, pg_db, s3_bucket, backup_dir, run_module):
    down = unreachable(s3_bucket)
    result = ok(run_module("backup_info", {"name": pg_db, "backup_dir": backup_dir, "s3": down}))
    assert [(b["id"], b["location"]) for b in result["backups"]] == [(made["id"], "local")]
    assert "S3 listing failed" in result["s3_error"] and S3_DOWN in result["s3_error"]
    warned_about_s3(result)
    # without a local directory there is nothing to fall back to: that still fails, naming S3
    msg = run_module("backup_info", {"name": pg_db, "s3": down})
    assert msg.get("failed") and S3_DOWN in msg["msg"], msg


def test_restore_latest_uses_the_local_copy_when_s3_is_down(made, pg_server, pg_db, s3_bucket, backup_dir,
                                                            run_module, table_digest):
    target = pg_db + "_restore"
    result = ok(run_module("pg_restore_safe", {**pg_server.params(), "db": target, "source_db": pg_db,
                                               "backup_dir": backup_dir, "s3": unreachable(s3_bucket)}))
    assert result["source"]["id"] == made["id"] and result["source"]["location"] == "local"
    assert S3_DOWN in result["s3_error"]
    warned_about_s3(result)
    assert any("WARNING" in line and S3_DOWN in line for line in result["log"]), result["log"]
    with open(result["log_file"], encoding="utf-8") as handle:
        assert S3_DOWN in handle.read()
    assert table_digest(pg_server, target) == table_digest(pg_server, pg_db)


def test_restore_latest_with_no_local_copy_names_the_s3_problem(pg_server, pg_db, s3_bucket, tmp_path, run_module):
    result = run_module("pg_restore_safe", {**pg_server.params(), "db": pg_db + "_restore", "source_db": pg_db,
                                            "backup_dir": str(tmp_path / "empty"), "s3": unreachable(s3_bucket)})
    assert result.get("failed"), result
    assert "no complete backup" in result["msg"] and S3_DOWN in result["msg"], result["msg"]


def test_database_drill_runs_from_the_local_copy_when_s3_is_down(made, pg_server, pg_db, s3_bucket, backup_dir,
                                                                 run_module):
    result = ok(run_module("restore_drill", {**pg_server.params(), "db": pg_db, "backup_dir": backup_dir,
                                             "s3": unreachable(s3_bucket)}))
    report = result["report"]
    assert report["status"] == "success" and report["backup_id"] == made["id"] and report["backup_location"] == "local"
    assert S3_DOWN in report["s3_error"]
    warned_about_s3(result)


def test_file_set_restore_and_drill_use_the_local_copy_when_s3_is_down(s3_bucket, tmp_path, run_module):
    app = tmp_path / "app"
    (app / "docs").mkdir(parents=True)
    (app / "docs" / "a.txt").write_text("one\n")
    (app / "b.bin").write_bytes(os.urandom(5000))
    backup_dir = str(tmp_path / "files")
    made = ok(run_module("files_backup", {"name": "app", "paths": [str(app)], "backup_dir": backup_dir,
                                          "s3": s3_bucket}))["backup"]
    assert made["s3_uri"]
    down = unreachable(s3_bucket)
    target = tmp_path / "restored"
    result = ok(run_module("files_restore", {"name": "app", "backup_dir": backup_dir, "s3": down,
                                             "target": str(target)}))
    assert result["source"]["id"] == made["id"] and result["source"]["location"] == "local"
    assert S3_DOWN in result["s3_error"]
    warned_about_s3(result)
    assert (target / "docs" / "a.txt").read_text() == "one\n"
    assert (target / "b.bin").read_bytes() == (app / "b.bin").read_bytes()

    drill = ok(run_module("restore_drill", {"file_set": "app", "backup_dir": backup_dir, "s3": down}))
    assert drill["report"]["status"] == "success" and drill["report"]["backup_location"] == "local"
    assert S3_DOWN in drill["report"]["s3_error"]
    warned_about_s3(drill)
