# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 10: side outputs never fail a complete backup, and one database never costs the others theirs.

- A ``metrics_dir`` that is missing, under a regular file, or on a read-only
  mount (root writes through mode bits; a read-only mount stops root too) is a
  warning, like a webhook outage: the backup is complete and the run succeeds.
- The CLI runs every configured database whatever happens to one of them: no
  traceback in cron mail, ``doctorq-backup: <db>: <message>`` on stderr, exit 1.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

import pytest

from ansible_collections.doctorq.backup.cli import backup as cli
from backup_support import read_json, run_cli, tmpfs, tree, write_private

pytestmark = pytest.mark.faults


def job_params(pg_server, db: str, backup_dir, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": str(backup_dir), **extra}


def manifests(backup_dir, db: str) -> list[str]:
    return [p for p in tree(str(backup_dir)) if p.endswith(".manifest.json") and os.path.basename(p).startswith(db)]


@pytest.mark.parametrize("how", ["missing", "under_a_regular_file", "read_only_mount"])
def test_metrics_dir_that_cannot_be_written_is_a_warning(how, pg_server, pg_db, run_module, tmp_path):
    with contextlib.ExitStack() as stack:
        if how == "missing":
            metrics_dir = str(tmp_path / "no" / "such" / "textfile")
        elif how == "under_a_regular_file":
            (tmp_path / "file").write_text("x")
            metrics_dir = str(tmp_path / "file" / "textfile")
        else:
            metrics_dir = stack.enter_context(tmpfs(str(tmp_path / "ro"), "1m", read_only=True))
        backup_dir = tmp_path / "backups"
        result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, notification={"metrics_dir": metrics_dir}))
        assert not result.get("failed"), result.get("msg")
        # the backup is complete and listed
        assert os.path.exists(result["backup"]["path"] + ".manifest.json")
        assert read_json(result["backup"]["path"] + ".manifest.json")["sha256"] == result["backup"]["sha256"]
        # the warning names the metrics directory and says what to do; no raw errno
        [warning] = [w for w in result["warnings"] if "metrics" in w]
        assert metrics_dir in warning and "metrics_dir" in warning and not warning.startswith("[Errno")
        with open(result["log_file"], encoding="utf-8") as handle:
            log = handle.read()
        assert "WARNING: " in log and metrics_dir in log and "Backup completed successfully" in log
        assert not os.path.exists(metrics_dir) or os.listdir(metrics_dir) == []


def test_cli_goes_on_after_a_database_fails_and_never_prints_a_traceback(pg_server, pg_db, tmp_path):
    """The first database does not exist and the metrics directory is missing: the second is still backed up."""
    missing = f"{pg_db}_missing"
    metrics_dir = str(tmp_path / "no-textfile")
    params = {**job_params(pg_server, pg_db, tmp_path / "backups", notification={"metrics_dir": metrics_dir}),
              "databases": [missing, pg_db]}
    del params["db"]
    config = write_private(str(tmp_path / "backup.json"), json.dumps(params))
    done = run_cli("backup", "--config", config)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1, done.stderr
    assert f"doctorq-backup: {missing}: database '{missing}' does not exist" in done.stderr
    assert f"doctorq-backup: {pg_db}:" not in done.stderr  # the second one succeeded
    assert "Backup completed successfully" in done.stdout and metrics_dir in done.stdout
    assert len(manifests(tmp_path / "backups", pg_db)) == 1


def test_cli_turns_an_unexpected_exception_into_one_line_and_runs_the_rest():
    """Whatever a run raises (a bug), the CLI names it on one line, never a traceback, and runs the next one."""
    ran: list[str] = []

    def broken() -> dict[str, Any]:
        ran.append("first")
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/x.prom")

    def fine() -> dict[str, Any]:
        ran.append("second")
        return {}

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.run_all([("first", broken), ("second", fine)])
    assert status == 1 and ran == ["first", "second"]
    [line] = err.getvalue().splitlines()
    assert line.startswith("doctorq-backup: first: ") and "FileNotFoundError" in line and "/nowhere/x.prom" in line
    assert "Traceback" not in err.getvalue()
