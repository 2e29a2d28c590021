"""The database host after the client, pgbackrest and drill roles and side_effect.yml (a full backup by the
collection's runner, the PITR drill by playbooks/drill.yml): real state, then real backups into SeaweedFS,
one of them from a cron line run as cron runs it (what it mails).

Run by molecule's testinfra verifier with the podman backend (see molecule.yml).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex

CONF = "/etc/pgbackrest/pgbackrest.conf"
CRON = "/etc/cron.d/doctorq-pgbackrest"
PGBR = f"runuser -u postgres -- pgbackrest --config={CONF} --stanza=main"
RUNNER = "/usr/local/bin/doctorq-pgbackrest"
JOB_CONFIG = "/etc/doctorq-backup/pgbackrest.json"
JOB_DIR = "/var/lib/doctorq-backup/pgbackrest"
DRILL_CRON = "/etc/cron.d/doctorq-backup-drill"
REPORTS = "/var/lib/doctorq-backup/drills"
CRON_RUNNER = "/usr/local/sbin/doctorq-backup-cron"  # every cron entry runs through it: log file and cron mail
CRON_LOG = "/var/log/pgbackrest/doctorq-cron.log"
DRILL_LOG = "/var/log/doctorq-backup/doctorq-backup-drill.log"
CIPHER = "molecule-cipher-passphrase"  # molecule.yml's pgbackrest_cipher_pass
LOG_LINE = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


def _psql(host, sql: str, db: str = "postgres") -> str:
    return host.check_output(f"runuser -u postgres -- psql -XAtq -d {db} -c {shlex.quote(sql)}")


def test_pgbackrest_installed(host):
    assert host.package("pgbackrest").is_installed


def test_configuration_is_private_and_names_the_s3_repository(host):
    conf = host.file(CONF)
    assert (conf.user, conf.group, conf.mode) == ("postgres", "postgres", 0o640)
    text = conf.content_string
    for line in ("repo1-type=s3", "repo1-s3-uri-style=path", "repo1-s3-endpoint=localhost",
                 "repo1-storage-ca-file=/etc/doctorq-molecule/ca.crt", "repo1-retention-full-type=time",
                 "repo1-retention-full=7", "archive-async=y", "repo1-cipher-type=aes-256-cbc",
                 "[main]", "pg1-path=/var/lib/postgresql/15/main"):
        assert line in text.splitlines(), line


def test_archiving_is_on_and_nothing_waits_for_a_restart(host):
    assert _psql(host, "SHOW archive_mode") == "on"
    assert _psql(host, "SHOW archive_command") == f"pgbackrest --config={CONF} --stanza=main archive-push %p"
    assert _psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
    dropin = host.file("/etc/postgresql/15/main/conf.d/doctorq-pgbackrest.conf")
    assert dropin.exists and "archive_mode = 'on'" in dropin.content_string


def test_check_archives_into_the_bucket(host):
    out = host.run(f"{PGBR} --log-level-console=info check")
    assert out.rc == 0, out.stderr + out.stdout
    assert "successfully archived" in out.stdout
    assert int(_psql(host, "SELECT archived_count FROM pg_stat_archiver")) > 0


def test_cron_weekly_full_and_six_hourly_incremental_through_the_cron_runner(host):
    text = host.file(CRON).content_string
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    # the role's default pgbackrest_cron_mail: failure, said in the file
    assert f"# Cron mails MAILTO a failed run: its outcome, log lines and error, also appended to {CRON_LOG}." in text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    run = f"{CRON_RUNNER} failure {CRON_LOG} {RUNNER} backup --level %s --config {JOB_CONFIG}"
    assert lines == [
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MAILTO=dba@example.com",
        "0 1 * * 0 postgres " + run % "full",
        "0 1 * * 1,2,3,4,5,6 postgres " + run % "incr",
        "0 7,13,19 * * * postgres " + run % "incr",
    ]
    assert CIPHER not in text and "secret" not in text.lower()
    runner = host.file(CRON_RUNNER)
    assert (runner.user, runner.group, runner.mode) == ("root", "root", 0o755)


def _as_cron(host, command: str):
    """Run a cron line's command as cron would (user postgres, cron's PATH); its stdout is what cron mails."""
    return host.run(f"runuser -u postgres -- env -i PATH=/usr/bin:/bin sh -c {shlex.quote(command)}")


def _incremental_command(host) -> str:
    """The command of the six-hourly incremental backup's cron line."""
    for line in host.file(CRON).content_string.splitlines():
        fields = line.split(None, 6)
        if len(fields) == 7 and fields[1] == "7,13,19":
            assert fields[5] == "postgres"
            return fields[6]
    raise AssertionError("no six-hourly cron line")


def test_incremental_cron_line_mails_the_outcome_and_the_backups_summary(host):
    """The six-hourly line as cron runs it: silent on success by default, its output in the log; with
    pgbackrest_cron_mail: always the mail is the outcome line, then the backup's log lines."""
    command = _incremental_command(host)
    quiet = _as_cron(host, command)
    assert (quiet.rc, quiet.stdout, quiet.stderr) == (0, "", ""), quiet.stdout + quiet.stderr  # no mail
    log = host.file(CRON_LOG).content_string
    assert re.search(LOG_LINE + r"INCR backup \S+ finished: ", log), log[-3000:]

    mailed = _as_cron(host, command.replace(f"{CRON_RUNNER} failure ", f"{CRON_RUNNER} always "))
    assert mailed.rc == 0 and mailed.stderr == "", mailed.stdout + mailed.stderr
    mail = mailed.stdout.splitlines()
    assert re.fullmatch(r"doctorq-pgbackrest backup on \S+: succeeded", mail[0]) and mail[1] == "", mail
    assert any(re.fullmatch(LOG_LINE + r"INCR backup \S+ finished: .* stored in the repository .*", line)
               for line in mail), mail
    assert re.fullmatch(LOG_LINE + "Backup completed successfully", mail[-1]), mail
    assert "\n".join(mail[2:]) in host.file(CRON_LOG).content_string  # the same lines reached the log file
    assert CIPHER not in mailed.stdout


_NO_SUCH_STANZA = ("import json, sys; c = json.load(open(sys.argv[1])); c['stanza'] = 'no_such_stanza'; "
                   "json.dump(c, open(sys.argv[1], 'w'))")


def test_failed_cron_run_mails_its_log_lines_and_error(host):
    """The six-hourly line with a stanza that does not exist: the default (failure) mails FAILED, then the error."""
    bad = "/tmp/doctorq-mail-test.json"
    host.run_expect([0], f"install -o postgres -g postgres -m 0600 {JOB_CONFIG} {bad}")
    try:
        host.run_expect([0], f"runuser -u postgres -- python3 -c {shlex.quote(_NO_SUCH_STANZA)} {bad}")
        result = _as_cron(host, _incremental_command(host).replace(JOB_CONFIG, bad).replace(f" {CRON_LOG} ", " - "))
    finally:
        host.run(f"rm -f {bad}")
    assert result.rc == 1 and result.stderr == "", result.stdout + result.stderr
    mail = result.stdout.splitlines()
    assert re.fullmatch(r"doctorq-pgbackrest backup on \S+: FAILED \(exit 1\)", mail[0]) and mail[1] == "", mail
    assert any(re.match(LOG_LINE, line) for line in mail[2:]), mail  # the run's own log lines
    assert mail[-1].startswith("doctorq-pgbackrest: ") and "no_such_stanza" in result.stdout, mail


def test_job_config_is_private(host):
    conf = host.file(JOB_CONFIG)
    assert (conf.user, conf.mode) == ("postgres", 0o600)
    assert json.loads(conf.content_string)["stanza"] == "main"


def test_drill_role_schedules_the_pitr_drill(host):
    text = host.file(DRILL_CRON).content_string
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    assert "MAILTO=dba@example.com" in text.splitlines()  # drill_cron_mailto: pgbackrest_cron_mailto by default
    jobs = [line for line in text.splitlines() if line[:1].isdigit()]
    assert jobs == [f"0 6 * * 1 postgres {CRON_RUNNER} always {DRILL_LOG} {RUNNER} drill --config {JOB_CONFIG} "
                    f"--report-dir {REPORTS} --max-rpo-seconds 900"]
    log = host.file(DRILL_LOG)  # made for postgres by the role, so every drill can append to it
    assert (log.user, log.mode) == ("postgres", 0o640)
    host.run_expect([0], "logrotate --debug /etc/logrotate.d/doctorq-backup-drill")


def test_full_backup_through_the_runner_left_its_run_log(host):
    logs = [name for name in host.check_output(f"ls {JOB_DIR}").split()
            if name.startswith("backup_pgbackrest-main_") and name.endswith(".log")]
    texts = [host.file(f"{JOB_DIR}/{name}").content_string for name in logs]
    assert any("FULL backup" in text and "Backup completed successfully" in text for text in texts), logs
    # the pgbackrest_backup module, run without log_dir, logs (and locks) in the same directory as the runner
    assert any("INCR backup" in text and "Backup completed successfully" in text for text in texts), logs


def test_pitr_drill_recovered_past_the_backup_and_cleaned_up(host):
    report = json.loads(host.file(f"{REPORTS}/drill_pgbackrest-main.json").content_string)
    assert report["status"] == "success" and report["error"] is None
    assert (report["name"], report["source_type"]) == ("main", "stanza")
    assert (report["stanza"], report["kind"]) == ("main", "pitr")  # the keys of before, until 1.0.0
    assert 0 < report["rto_s"] < 600 and 0 <= report["rpo_s"] <= 900
    # the table written after the full backup came back from the archived WAL
    written = _psql(host, "SELECT to_char(written AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM after_backup",
                    db="doctorq")
    recovered = dt.datetime.fromisoformat(report["recovery_point"].replace("Z", ""))
    assert recovered >= dt.datetime.fromisoformat(written), (report["recovery_point"], written)
    assert report["recovery"]["databases"]["doctorq"] >= 2
    labels = [b["label"] for b in json.loads(host.check_output(f"{PGBR} --output=json info"))[0]["backup"]]
    assert report["backup_id"] in labels
    assert not host.file(report["pitr"]["data_dir"]).exists, "the drill removes its scratch cluster"
    audit = [json.loads(line) for line in host.file(f"{JOB_DIR}/restore_audit.jsonl").content_string.splitlines()]
    assert audit[-1]["mode"] == "pitr_drill" and audit[-1]["status"] == "success"
    assert (audit[-1]["name"], audit[-1]["source_type"], audit[-1]["database"]) == ("main", "stanza", "pgbackrest/main")


def test_full_then_incremental_backup_listed(host):
    for kind in ("full", "incr"):
        out = host.run(f"{PGBR} backup --type={kind}")
        assert out.rc == 0, out.stderr + out.stdout
    info = json.loads(host.check_output(f"{PGBR} --output=json info"))[0]
    types = [b["type"] for b in info["backup"]]
    assert types[-2:] == ["full", "incr"]
    assert info["backup"][-1]["prior"] == info["backup"][-2]["label"]
    assert info["cipher"] == "aes-256-cbc" and info["status"]["code"] == 0
