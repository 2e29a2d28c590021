"""The frame every restore runs in (restore_run.py): own log, one audit line, one failure shape, the safety backup."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.restore_run import RestoreRun
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import DATABASE, ArchiveOptions
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog


@dataclasses.dataclass(frozen=True)
class Job:
    backup_dir: str
    s3: s3util.S3Config | None = None
    archive: ArchiveOptions = ArchiveOptions()
    work_dir: str | None = None
    safety_dir: str | None = None
    notifier: Notifier = Notifier()


class Run(RestoreRun):
    """A restore whose work is given: ``fail`` raises, otherwise it marks the result changed."""

    def __init__(self, job: Job, fail: str | None = None) -> None:
        super().__init__(job, None, DATABASE, {"changed": False})
        self.fail = fail

    def log_name(self) -> str:
        return f"restore_test_{self.stamp}.log"

    def title(self) -> str:
        return "Restore of test"

    def work(self, log: RunLog, check_mode: bool) -> None:
        log("working")
        if self.fail:
            raise DoctorqError(self.fail)
        self.result["changed"] = not check_mode

    def audit_record(self) -> dict[str, Any]:
        return {"database": "test"}

    def event(self, status: str, error: str | None) -> dict[str, Any]:
        return {"event": "restore", "status": status, "error": error}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def audit_lines(backup_dir: str) -> list[dict[str, Any]]:
    with open(os.path.join(backup_dir, "restore_audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_a_real_run_has_its_own_log_and_one_audit_line(tmp_path):
    result = Run(Job(str(tmp_path))).run(check_mode=False)
    assert result["changed"] and not result.get("failed")
    assert os.path.dirname(result["log_file"]) == str(tmp_path) and "working" in read(result["log_file"])
    [line] = audit_lines(str(tmp_path))
    assert line["status"] == "success" and line["database"] == "test" and line["error"] is None
    assert "duration_s" in result and result["durations"] == {}


def test_a_failed_run_is_one_failure_with_its_message_audited(tmp_path):
    result = Run(Job(str(tmp_path)), fail="the backup is damaged: restore another one.").run(check_mode=False)
    assert result["failed"] and result["msg"] == "the backup is damaged: restore another one."
    [line] = audit_lines(str(tmp_path))
    assert line["status"] == "failure" and line["error"] == result["msg"]


def test_check_mode_writes_nothing(tmp_path):
    backup_dir = tmp_path / "not-made"
    result = Run(Job(str(backup_dir))).run(check_mode=True)
    assert not result["changed"] and not result.get("log_file") and not backup_dir.exists()


def test_safety_backup_goes_to_safety_dir_and_its_failure_stops_the_restore(tmp_path):
    run = Run(Job(str(tmp_path)))
    seen = []

    def backup(safety_dir: str) -> dict[str, Any]:
        seen.append(safety_dir)
        return {"backup": {"path": os.path.join(safety_dir, "x.dump.zst"), "size": 2048}}

    assert run.safety_backup("'shop'", backup, RunLog())["backup"]["size"] == 2048
    assert seen == [os.path.join(str(tmp_path), "safety")] and "safety_backup" in run.durations
    with pytest.raises(DoctorqError, match="safety backup of 'shop' failed, so nothing was restored: disk full"):
        run.safety_backup("'shop'", lambda _dir: {"failed": True, "msg": "disk full"}, RunLog())
