"""The backup role's cron entries and what cron mails: the rendered lines, and the runner they go through.

Cron mails whatever a job prints to MAILTO. Every entry runs the job through
roles/backup/files/doctorq-backup-cron, which appends the whole output to the
log file and prints the outcome and that output for the mail (every run, or
only failed ones). molecule/default checks the same on a real host.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from role_support import render_role_template

RUNNER = Path(__file__).resolve().parents[4] / "roles" / "backup" / "files" / "doctorq-backup-cron"


def entries(**variables) -> list[str]:
    base = dict(backup_databases=["doctorq"], inventory_hostname="db1", ansible_managed="managed")
    text = render_role_template("backup", "cron.j2", {**base, **variables})
    assert text.endswith("\n")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_defaults_mail_every_run_and_keep_the_log():
    lines = entries()
    assert "MAILTO=root" in lines
    log = "/var/log/doctorq-backup/doctorq-backup.log"
    assert lines[-2:] == [
        f"0 2 * * * postgres /usr/local/sbin/doctorq-backup-cron always {log} /usr/local/bin/doctorq-backup backup "
        "--config /etc/doctorq-backup/backup.json",
        f"0 3 * * 0 postgres /usr/local/sbin/doctorq-backup-cron always {log} /usr/local/bin/doctorq-backup "
        "promote-weekly --config /etc/doctorq-backup/backup.json",
    ]
    assert ">>" not in "\n".join(lines)  # nothing bypasses the runner


def test_failure_only_without_log_file():
    lines = entries(backup_cron_mail="failure", backup_cron_log_file="", backup_cron_mailto="dba@example.com",
                    backup_file_sets=[{"name": "pgconf", "preset": "postgresql_config"}])
    assert "MAILTO=dba@example.com" in lines
    runs = [line for line in lines if "doctorq-backup-cron" in line]
    assert len(runs) == 3 and all("/doctorq-backup-cron failure - /usr/local/bin/doctorq-backup " in r for r in runs)


def _run(tmp_path: Path, when: str, log: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUNNER), when, log, "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, timeout=30, check=False)


SCRIPT = "echo '[2026-01-01 02:00:00] Backup completed successfully'; echo 'doctorq-backup: db: it broke' >&2; exit {rc}"


@pytest.mark.parametrize("when", ["always", "failure"])
def test_failed_run_mails_outcome_log_lines_and_error(tmp_path, when):
    log = tmp_path / "job.log"
    log.write_text("earlier run\n")
    result = _run(tmp_path, when, str(log), SCRIPT.format(rc=1))
    assert result.returncode == 1
    mail = result.stdout.splitlines()
    assert mail[0].startswith("sh -c on ") and mail[0].endswith(": FAILED (exit 1)"), mail
    assert mail[2:] == ["[2026-01-01 02:00:00] Backup completed successfully", "doctorq-backup: db: it broke"]
    assert log.read_text().splitlines() == ["earlier run", *mail[2:]]  # appended, errors included
    assert result.stderr == ""
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]  # its temporary files are gone


def test_successful_run_mails_only_with_always(tmp_path):
    always = _run(tmp_path, "always", "-", SCRIPT.format(rc=0))
    assert always.returncode == 0
    assert always.stdout.splitlines()[0].endswith(": succeeded")
    assert "Backup completed successfully" in always.stdout
    failure = _run(tmp_path, "failure", str(tmp_path / "job.log"), SCRIPT.format(rc=0))
    assert (failure.returncode, failure.stdout, failure.stderr) == (0, "", "")  # no mail
    assert "Backup completed successfully" in (tmp_path / "job.log").read_text()


def test_runner_refuses_a_bad_mode(tmp_path):
    result = _run(tmp_path, "sometimes", "-", "true")
    assert result.returncode == 2 and "always or failure" in result.stderr
