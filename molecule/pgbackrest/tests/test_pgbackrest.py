"""The database host after the client, pgbackrest and drill roles and side_effect.yml (a full backup by the
collection's runner, the PITR drill by playbooks/drill.yml): real state, then real backups into SeaweedFS.

Run by molecule's testinfra verifier with the podman backend (see molecule.yml).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex

CONF = "/etc/pgbackrest/pgbackrest.conf"
CRON = "/etc/cron.d/doctorq-pgbackrest"
PGBR = f"runuser -u postgres -- pgbackrest --config={CONF} --stanza=main"
RUNNER = "/usr/local/bin/doctorq-pgbackrest"
JOB_CONFIG = "/etc/doctorq-backup/pgbackrest.json"
JOB_DIR = "/var/lib/doctorq-backup/pgbackrest"
DRILL_CRON = "/etc/cron.d/doctorq-backup-drill"
REPORTS = "/var/lib/doctorq-backup/drills"


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


def test_cron_weekly_full_and_six_hourly_incremental_through_the_collections_runner(host):
    lines = [line for line in host.file(CRON).content_string.splitlines() if line and not line.startswith("#")]
    assert "MAILTO=dba@example.com" in lines
    jobs = [line.split(None, 6) for line in lines if line[0].isdigit()]
    run = f"{RUNNER} backup --kind %s --config {JOB_CONFIG} >>/var/log/pgbackrest/doctorq-cron.log"
    assert ["0", "1", "*", "*", "0", "postgres", run % "physical_full"] in jobs
    incr = [j for j in jobs if j[6] == run % "incremental"]
    assert {(j[1], j[4]) for j in incr} == {("1", "1,2,3,4,5,6"), ("7,13,19", "*")}
    assert len(jobs) == 3


def test_job_config_is_private(host):
    conf = host.file(JOB_CONFIG)
    assert (conf.user, conf.mode) == ("postgres", 0o600)
    assert json.loads(conf.content_string)["stanza"] == "main"


def test_drill_role_schedules_the_pitr_drill(host):
    text = host.file(DRILL_CRON).content_string
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    jobs = [line for line in text.splitlines() if line[:1].isdigit()]
    assert jobs == [f"0 6 * * 1 postgres {RUNNER} drill --config {JOB_CONFIG} --report-dir {REPORTS} "
                    "--max-rpo-seconds 900"]


def test_full_backup_through_the_runner_left_its_run_log(host):
    logs = [name for name in host.check_output(f"ls {JOB_DIR}").split()
            if name.startswith("backup_pgbackrest-main_") and name.endswith(".log")]
    texts = [host.file(f"{JOB_DIR}/{name}").content_string for name in logs]
    assert any("PHYSICAL_FULL backup" in text and "Backup completed successfully" in text for text in texts), logs
    # the pgbackrest_backup module, run without log_dir, logs (and locks) in the same directory as the runner
    assert any("INCREMENTAL backup" in text and "Backup completed successfully" in text for text in texts), logs


def test_pitr_drill_recovered_past_the_backup_and_cleaned_up(host):
    report = json.loads(host.file(f"{REPORTS}/drill_pgbackrest-main.json").content_string)
    assert report["status"] == "success" and report["error"] is None and report["kind"] == "pitr"
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


def test_full_then_incremental_backup_listed(host):
    for kind in ("full", "incr"):
        out = host.run(f"{PGBR} backup --type={kind}")
        assert out.rc == 0, out.stderr + out.stdout
    info = json.loads(host.check_output(f"{PGBR} --output=json info"))[0]
    types = [b["type"] for b in info["backup"]]
    assert types[-2:] == ["full", "incr"]
    assert info["backup"][-1]["prior"] == info["backup"][-2]["label"]
    assert info["cipher"] == "aes-256-cbc" and info["status"]["code"] == 0
