"""The pgbackrest role's cron entries: every backup through the cron runner, with the role's mail mode and log file.

The runner (roles/client/files/doctorq-backup-cron, tested in
tests/unit/roles/client) appends a run's output to pgbackrest_cron_log_file and
prints its outcome and output for cron to mail; molecule/pgbackrest runs a line
as cron would on a real host.
"""
from __future__ import annotations

from role_support import render_role_template

RUNNER = "/usr/local/sbin/doctorq-backup-cron"
LOG = "/var/log/pgbackrest/doctorq-cron.log"


def rendered(**variables) -> str:
    base = dict(inventory_hostname="db1", ansible_managed="managed", _pgbackrest_use_doctorq=True)
    text = render_role_template("pgbackrest", "cron.j2", {**base, **variables})
    assert text.endswith("\n"), "cron ignores a last line without its newline"
    return text


def entries(**variables) -> list[str]:
    return [line for line in rendered(**variables).splitlines() if line and not line.startswith("#")]


def test_defaults_mail_failed_runs_and_keep_the_log():
    text = rendered()
    assert f"# Cron mails MAILTO a failed run: its outcome, log lines and error, also appended to {LOG}." in text
    run = f"{RUNNER} failure {LOG} /usr/local/bin/doctorq-pgbackrest backup --level %s --config /etc/doctorq-backup/pgbackrest.json"
    assert entries() == [
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MAILTO=root",
        "0 1 * * 0 postgres " + run % "full",
        "0 1 * * 1,2,3,4,5,6 postgres " + run % "incr",
        "0 7,13,19 * * * postgres " + run % "incr",
    ]
    assert ">>" not in text  # nothing bypasses the runner
    assert "# incremental ones (incr) every 6 hours." in text and "# Incremental backups: " in text


def test_always_without_log_file_with_pgbackrest_itself():
    text = rendered(pgbackrest_cron_mail="always", pgbackrest_cron_log_file="", pgbackrest_cron_mailto="dba@example.com",
                    _pgbackrest_use_doctorq=False, pgbackrest_cron_level="diff", pgbackrest_cron_every_hours=12)
    assert "# Cron mails MAILTO every run: its outcome and log lines.\n" in text
    assert "# differential ones (diff) every 12 hours." in text
    lines = entries(pgbackrest_cron_mail="always", pgbackrest_cron_log_file="", pgbackrest_cron_mailto="dba@example.com",
                    _pgbackrest_use_doctorq=False, pgbackrest_cron_level="diff", pgbackrest_cron_every_hours=12)
    pgbr = (f"{RUNNER} always - pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=main "
            "--log-level-console=info backup --type=")
    assert lines[2:] == [
        "MAILTO=dba@example.com",
        "0 1 * * 0 postgres " + pgbr + "full",
        "0 1 * * 1,2,3,4,5,6 postgres " + pgbr + "diff",
        "0 13 * * * postgres " + pgbr + "diff",
    ]


def test_the_old_variable_pgbackrest_cron_kind_is_honoured_until_1_0_0():
    run = f"{RUNNER} failure {LOG} /usr/local/bin/doctorq-pgbackrest backup --level %s --config /etc/doctorq-backup/pgbackrest.json"
    assert entries(pgbackrest_cron_kind="differential")[3:] == [
        "0 1 * * 0 postgres " + run % "full",
        "0 1 * * 1,2,3,4,5,6 postgres " + run % "diff",
        "0 7,13,19 * * * postgres " + run % "diff",
    ]
    assert entries(pgbackrest_cron_kind="incremental")[-1].endswith("--level incr --config /etc/doctorq-backup/pgbackrest.json")
    # the new variable, when set, wins
    assert entries(pgbackrest_cron_kind="differential", pgbackrest_cron_level="incr")[-1].endswith(
        "--level incr --config /etc/doctorq-backup/pgbackrest.json")
