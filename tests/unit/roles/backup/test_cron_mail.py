"""The backup role's cron entries: every line through the cron runner, with the role's mail mode and log file.

Cron mails whatever a job prints to MAILTO. Every entry runs the job through
the client role's runner (roles/client/files/doctorq-backup-cron, tested in
tests/unit/roles/client), which appends the whole output to the log file and
prints the outcome and that output for the mail (every run, or only failed
ones). molecule/default checks the same on a real host.
"""
from __future__ import annotations

from role_support import render_role_template


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
