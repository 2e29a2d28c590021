"""The cron runner every scheduled job of the collection goes through (roles/client/files/doctorq-backup-cron).

Cron mails whatever a job prints to MAILTO. The backup, pgbackrest and drill
roles' cron entries run their job through this one script (the client role's
cron_runner entry point installs it): it appends the whole output to the log
file and prints the outcome and that output for the mail (every run, or only
failed ones). molecule/default and molecule/pgbackrest check the same on a real host.
"""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[4] / "roles" / "client" / "files" / "doctorq-backup-cron"


def _run(tmp_path: Path, when: str, log: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUNNER), when, log, *command], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, timeout=30, check=False)


SCRIPT = "echo '[2026-01-01 02:00:00] Backup completed successfully'; echo 'doctorq-backup: db: it broke' >&2; exit {rc}"


@pytest.mark.parametrize("when", ["always", "failure"])
def test_failed_run_mails_outcome_log_lines_and_error(tmp_path, when):
    log = tmp_path / "job.log"
    log.write_text("earlier run\n")
    result = _run(tmp_path, when, str(log), "sh", "-c", SCRIPT.format(rc=1))
    assert result.returncode == 1
    mail = result.stdout.splitlines()
    assert mail[0].startswith("sh -c on ") and mail[0].endswith(": FAILED (exit 1)"), mail
    assert mail[2:] == ["[2026-01-01 02:00:00] Backup completed successfully", "doctorq-backup: db: it broke"]
    assert log.read_text().splitlines() == ["earlier run", *mail[2:]]  # appended, errors included
    assert result.stderr == ""
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]  # its temporary files are gone


def test_successful_run_mails_only_with_always(tmp_path):
    always = _run(tmp_path, "always", "-", "sh", "-c", SCRIPT.format(rc=0))
    assert always.returncode == 0
    assert always.stdout.splitlines()[0].endswith(": succeeded")
    assert "Backup completed successfully" in always.stdout
    failure = _run(tmp_path, "failure", str(tmp_path / "job.log"), "sh", "-c", SCRIPT.format(rc=0))
    assert (failure.returncode, failure.stdout, failure.stderr) == (0, "", "")  # no mail
    assert "Backup completed successfully" in (tmp_path / "job.log").read_text()


def test_first_line_names_the_command_and_its_subcommand(tmp_path):
    """Long options before the subcommand (pgbackrest --config=... --stanza=... backup) are skipped."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pgbackrest"
    fake.write_text("#!/bin/sh\necho 'P00   INFO: backup command end: completed successfully'\nexit 56\n")
    fake.chmod(0o755)
    result = _run(tmp_path, "failure", "-", str(fake), "--config=/etc/pgbackrest/pgbackrest.conf", "--stanza=main",
                  "--log-level-console=info", "backup", "--type=incr")
    assert result.returncode == 56
    assert result.stdout.splitlines() == [f"pgbackrest backup on {socket.gethostname()}: FAILED (exit 56)", "",
                                          "P00   INFO: backup command end: completed successfully"]


def test_runner_refuses_a_bad_mode(tmp_path):
    result = _run(tmp_path, "sometimes", "-", "true")
    assert result.returncode == 2 and "always or failure" in result.stderr
