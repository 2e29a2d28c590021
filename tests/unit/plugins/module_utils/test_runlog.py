"""Run logs: pruned with the backups they made, never the current one; a restore gets its own file."""

from __future__ import annotations

import datetime as dt

from ansible_collections.doctorq.backup.plugins.module_utils.backup_steps import Stores
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog

NOW = dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.timezone.utc)


def _touch(directory, *names):
    for name in names:
        (directory / name).write_text("[2026-01-01 02:00:00] old run\n")


def test_old_logs_of_this_job_go_and_everything_else_stays(tmp_path):
    _touch(tmp_path,
           "backup_doctorq_20251101_020000.log",      # 391 days: older than the weekly window
           "backup_doctorq_20260101_020000.log",      # 330 days: inside it
           "backup_doctorq_files_20241101_020000.log",  # another job's (file set doctorq's, or db doctorq_files)
           "backup_other_20241101_020000.log",        # another database's
           "restore_doctorq_20241101_020000.log",     # restores are kept (audit)
           "backup_doctorq_20241101_020000.log.bak")  # not a run log name
    log = RunLog(str(tmp_path / "backup_doctorq_20261127_020000.log"))
    removed = Stores.prune_logs(NOW, {"daily": 30, "weekly": 365}, log, check_mode=False)
    log.close()
    assert [p.rsplit("/", 1)[1] for p in removed] == ["backup_doctorq_20251101_020000.log"]
    names = {p.name for p in tmp_path.iterdir()}
    assert "backup_doctorq_20251101_020000.log" not in names
    assert {"backup_doctorq_20260101_020000.log", "backup_doctorq_20261127_020000.log",
            "backup_doctorq_files_20241101_020000.log", "backup_other_20241101_020000.log",
            "restore_doctorq_20241101_020000.log", "backup_doctorq_20241101_020000.log.bak"} <= names


def test_check_mode_and_keep_forever_delete_nothing(tmp_path):
    _touch(tmp_path, "backup_doctorq_20201101_020000.log")
    log = RunLog(str(tmp_path / "backup_doctorq_20261127_020000.log"))
    assert Stores.prune_logs(NOW, {"daily": 30, "weekly": 365}, log, check_mode=True)
    assert Stores.prune_logs(NOW, {"daily": 30, "weekly": 0}, log, check_mode=False) == []
    assert Stores.prune_logs(NOW, {"daily": 30, "weekly": None}, log, check_mode=False) == []
    assert Stores.prune_logs(NOW, {"daily": 30, "weekly": 365}, RunLog(), check_mode=False) == []  # no log file
    log.close()
    assert (tmp_path / "backup_doctorq_20201101_020000.log").exists()
    assert any("Would remove 1 run log" in line for line in log.lines)


def test_a_restore_log_is_its_own_file_even_in_the_same_second(tmp_path):
    path = str(tmp_path / "restore_doctorq_20261127_020000.log")
    first, second, third = (RunLog(path, own_file=True) for _n in range(3))
    for n, log in enumerate((first, second, third)):
        log(f"run {n}")
        log.close()
    assert [first.path, second.path, third.path] == [path, path[:-4] + "-2.log", path[:-4] + "-3.log"]
    assert [open(p, encoding="utf-8").read().count("run") for p in (first.path, second.path, third.path)] == [1, 1, 1]
    shared = RunLog(path)  # a backup's log appends (one job, one lock)
    shared("again")
    shared.close()
    assert shared.path == path and open(path, encoding="utf-8").read().count("\n") == 2
