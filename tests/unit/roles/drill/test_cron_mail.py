"""The drill role's cron entries: every drill through the cron runner, with the role's mail mode and log file.

The runner (roles/client/files/doctorq-backup-cron, tested in
tests/unit/roles/client) appends a drill's output to drill_cron_log_file and
prints its outcome and output for cron to mail; molecule/default runs the
database drill's line as cron would on a real host.
"""
from __future__ import annotations

from role_support import render_role_template

RUNNER = "/usr/local/sbin/doctorq-backup-cron"
LOG = "/var/log/doctorq-backup/doctorq-backup-drill.log"
REPORTS = "/var/lib/doctorq-backup/drills"


def rendered(**variables) -> str:
    # the backup role's variables of the host, which the drill role reads by default
    base = dict(ansible_managed="managed", backup_databases=["doctorq", "billing"],
                backup_file_sets=[{"name": "pgconf", "preset": "postgresql_config"}])
    text = render_role_template("drill", "cron.j2", {**base, **variables})
    assert text.endswith("\n"), "cron ignores a last line without its newline"
    return text


def entries(**variables) -> list[str]:
    return [line for line in rendered(**variables).splitlines() if line and not line.startswith("#")]


def test_defaults_mail_every_drill_and_keep_the_log():
    text = rendered()
    assert f"# Cron mails MAILTO every drill: its outcome and log lines (RTO, RPO, checks), also appended to {LOG}." in text
    assert entries() == [
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MAILTO=root",
        f"0 5 * * 1 postgres {RUNNER} always {LOG} /usr/local/bin/doctorq-backup drill --config "
        f"/etc/doctorq-backup/backup.json --report-dir {REPORTS} --max-rpo-hours 26 --database doctorq --database billing",
        f"30 5 * * 1 root {RUNNER} always {LOG} /usr/local/bin/doctorq-backup files-drill --config "
        f"/etc/doctorq-backup/files.json --report-dir {REPORTS} --max-rpo-hours 26 --name pgconf",
    ]


def test_pitr_drill_failure_only_without_log_file():
    variables = dict(backup_databases=[], backup_file_sets=[], drill_pitr_enabled=True, drill_cron_mail="failure",
                     drill_cron_log_file="", drill_cron_mailto="dba@example.com", drill_pitr_scratch_port=5499)
    assert "# Cron mails MAILTO a failed drill: its outcome, log lines and error.\n" in rendered(**variables)
    assert entries(**variables)[2:] == [
        "MAILTO=dba@example.com",
        f"0 6 * * 1 postgres {RUNNER} failure - /usr/local/bin/doctorq-pgbackrest drill --config "
        f"/etc/doctorq-backup/pgbackrest.json --report-dir {REPORTS} --max-rpo-seconds 900 --scratch-port 5499",
    ]
