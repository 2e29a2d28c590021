"""The database host after playbooks/site.yml: real state, then the scheduled job really run.

Run by molecule's testinfra verifier with the podman backend (see molecule.yml).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex

import pytest

HOSTNAME = "doctorq-backup-molecule"  # the inventory name, which seeds the cron delay
BACKUP_DIR = "/var/backups/doctorq/database"
CONFIG = "/etc/doctorq-backup/backup.json"
CRON = "/etc/cron.d/doctorq-backup"
LOG = "/var/log/doctorq-backup/doctorq-backup.log"
WRAPPER = "/usr/local/bin/doctorq-backup"
RUNNER = "/usr/local/sbin/doctorq-backup-cron"  # every cron entry runs through it: log file and cron mail
COLLECTION = "/opt/doctorq-backup/collections/ansible_collections/doctorq/backup"
S3_ENDPOINT = os.environ.get("DOCTORQ_SEAWEED_ENDPOINT", "")
S3_BUCKET = os.environ.get("DOCTORQ_MOLECULE_BUCKET", "")
S3_SECRET = os.environ.get("DOCTORQ_SEAWEED_SECRET_KEY", "")
FILES_DIR = "/var/backups/doctorq/files"
FILES_CONFIG = "/etc/doctorq-backup/files.json"
DRILL_CRON = "/etc/cron.d/doctorq-backup-drill"
DRILL_LOG = "/var/log/doctorq-backup/doctorq-backup-drill.log"
DRILL_REPORTS = "/var/lib/doctorq-backup/drills"
PGCONF = "/etc/postgresql/15/main"
PGCONF_RESTORED = "/var/tmp/pgconf-restored"
ROWS_SQL = "SELECT count(*), sum(id), md5(string_agg(name, ',' ORDER BY id)) FROM patients"


def _delay() -> int:
    # what the role's `backup_cron_random_delay | random(seed=inventory_hostname)` yields for 900
    return random.Random(HOSTNAME).randrange(0, 900, 1)


def _psql(host, db: str, sql: str) -> str:
    return host.check_output(f"runuser -u postgres -- psql -XAtq -d {shlex.quote(db)} -c {shlex.quote(sql)}")


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("path", [BACKUP_DIR, f"{BACKUP_DIR}/weekly"])
def test_backup_directories(host, path):
    d = host.file(path)
    assert d.is_directory
    assert (d.user, d.group, d.mode) == ("postgres", "postgres", 0o700)


def test_config_is_private_and_complete(host):
    conf_dir = host.file(os.path.dirname(CONFIG))
    assert (conf_dir.user, conf_dir.group, conf_dir.mode) == ("root", "postgres", 0o750)
    f = host.file(CONFIG)
    assert (f.user, f.group, f.mode) == ("postgres", "postgres", 0o600)
    config = json.loads(f.content_string)
    assert config["databases"] == ["doctorq"]
    assert config["backup_dir"] == BACKUP_DIR
    assert "compression" not in config  # pg_backup's default: zstd (gzip for a directory backup with pg_dump < 16)
    assert (config["retention_daily_days"], config["retention_weekly_days"]) == (30, 365)
    if S3_ENDPOINT:
        assert config["s3"]["bucket"] == S3_BUCKET
        assert config["s3"]["secret_key"] == S3_SECRET
    else:
        assert "s3" not in config


def test_cron_file_exact(host):
    f = host.file(CRON)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert f.content_string.endswith("\n")  # cron ignores a last line without its newline
    lines = [line for line in f.content_string.splitlines() if line and not line.startswith("#")]
    delay = _delay()
    assert delay > 0
    assert lines == [
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MAILTO=dba@example.com",
        f"0 2 * * * postgres sleep {delay} && {RUNNER} always {LOG} {WRAPPER} backup --config {CONFIG}",
        f"0 3 * * 0 postgres sleep {delay} && {RUNNER} always {LOG} {WRAPPER} promote-weekly --config {CONFIG}",
        f"30 2 * * * root sleep {delay} && {RUNNER} always {LOG} {WRAPPER} files --config {FILES_CONFIG}",
    ]
    f = host.file(RUNNER)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o755)


@pytest.mark.parametrize("path", [FILES_DIR, f"{FILES_DIR}/weekly"])
def test_file_backup_directories(host, path):
    d = host.file(path)
    assert (d.is_directory, d.user, d.group, d.mode) == (True, "root", "root", 0o700)


def test_file_backup_config(host):
    f = host.file(FILES_CONFIG)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
    config = json.loads(f.content_string)
    assert config["sets"] == [{"name": "pgconf", "preset": "postgresql_config"}]
    assert config["backup_dir"] == FILES_DIR
    if S3_ENDPOINT:
        assert config["s3"]["prefix"] == "molecule/files"


def test_drill_cron_file_exact(host):
    f = host.file(DRILL_CRON)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert f.content_string.endswith("\n")  # cron ignores a last line without its newline
    # the drill role's default drill_cron_mail: always, said in the file
    assert (f"# Cron mails MAILTO every drill: its outcome and log lines (RTO, RPO, checks), also appended to "
            f"{DRILL_LOG}.") in f.content_string.splitlines()
    lines = [line for line in f.content_string.splitlines() if line and not line.startswith("#")]
    run = f"{RUNNER} always {DRILL_LOG}"
    assert lines == [
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MAILTO=dba@example.com",  # drill_cron_mailto: the backup role's backup_cron_mailto by default
        f"0 5 * * 1 postgres {run} {WRAPPER} drill --config {CONFIG} --report-dir {DRILL_REPORTS} --max-rpo-hours 26 "
        "--database doctorq",
        f"30 5 * * 1 root {run} {WRAPPER} files-drill --config {FILES_CONFIG} --report-dir {DRILL_REPORTS} "
        "--max-rpo-hours 26 --name pgconf",
    ]
    log = host.file(DRILL_LOG)  # made for postgres by the role: the root and postgres drills both append to it
    assert (log.user, log.group, log.mode) == ("postgres", "postgres", 0o640)
    host.run_expect([0], "logrotate --debug /etc/logrotate.d/doctorq-backup-drill")


def test_no_secret_in_cron_file(host):
    content = host.file(CRON).content_string
    assert "secret" not in content.lower() and "password" not in content.lower()
    if S3_SECRET:
        assert S3_SECRET not in content


def test_cron_running(host):
    assert host.service("cron").is_running


def test_logrotate(host):
    f = host.file("/etc/logrotate.d/doctorq-backup")
    assert (f.user, f.mode) == ("root", 0o644)
    assert f.content_string.startswith("# ")
    assert f"{LOG} {{" in f.content_string
    assert "su postgres postgres" in f.content_string
    host.run_expect([0], "logrotate --debug /etc/logrotate.d/doctorq-backup")
    log_dir = host.file(os.path.dirname(LOG))
    assert (log_dir.user, log_dir.group, log_dir.mode) == ("postgres", "postgres", 0o750)
    log = host.file(LOG)  # made for postgres by the role: the root file-set line and the postgres lines append to it
    assert (log.user, log.group, log.mode) == ("postgres", "postgres", 0o640)


def test_client_tools_match_server(host):
    server = _psql(host, "postgres", "SHOW server_version_num")
    major = int(server) // 10000
    out = host.check_output("pg_dump --version")  # Debian's pg_wrapper picks the cluster's version
    assert re.search(rf"\(PostgreSQL\) {major}\.", out), out
    assert host.package(f"postgresql-client-{major}").is_installed
    assert host.file(f"/usr/lib/postgresql/{major}/bin/pg_dump").is_file
    for pkg in ("zstd", "python3-venv"):
        assert host.package(pkg).is_installed


def test_virtualenv(host):
    out = host.check_output("/opt/doctorq-backup/venv/bin/python -c "
                            "'import boto3, psycopg2, ansible; print(ansible.__version__)'")
    assert out.startswith("2.19.")


def test_collection_installed(host):
    manifest = json.loads(host.file(f"{COLLECTION}/MANIFEST.json").content_string)
    assert (manifest["collection_info"]["namespace"], manifest["collection_info"]["name"]) == ("doctorq", "backup")
    assert host.file(f"{COLLECTION}/cli/backup.py").is_file


def test_wrapper(host):
    f = host.file(WRAPPER)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o755)
    out = host.check_output(f"{WRAPPER} --help")
    for command in ("backup", "promote-weekly", "list", "drill", "files", "files-drill"):
        assert command in out


# ---------------------------------------------------------------- the scheduled job, for real


def _cron_command(host, verb: str) -> str:
    """The command of the cron line running `verb`, without its delay."""
    for line in host.file(CRON).content_string.splitlines():
        fields = line.split(None, 6)
        if len(fields) == 7 and not line.startswith("#") and f" {verb} " in fields[6]:
            assert fields[5] == "postgres"
            return re.sub(r"^sleep [0-9]+ && ", "", fields[6])
    raise AssertionError(f"no cron line runs {verb}")


def _as_cron(host, command: str):
    """Run a cron line's command as cron would (user postgres, cron's PATH); its stdout is what cron mails."""
    return host.run(f"runuser -u postgres -- env -i PATH=/usr/bin:/bin sh -c {shlex.quote(command)}")


@pytest.fixture(scope="module")
def daily_mail(host) -> str:
    """The daily cron line run as cron would: the mail it sends (its stdout)."""
    command = _cron_command(host, "backup")
    result = _as_cron(host, command)
    assert result.rc == 0, f"{command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr == "", result.stderr  # everything goes to the mail and the log, nothing around them
    return result.stdout


@pytest.fixture(scope="module")
def daily_run(host, daily_mail):  # pylint: disable=unused-argument
    """The newest daily backup after the daily cron line ran."""
    names = host.check_output(f"ls {BACKUP_DIR}").split()
    dumps = sorted(n for n in names if re.fullmatch(r"doctorq_full_\d{8}_\d{6}\.dump\.zst", n))
    assert dumps, names
    return dumps[-1]


def test_daily_run_makes_a_complete_backup(host, daily_run):
    path = f"{BACKUP_DIR}/{daily_run}"
    for suffix in ("", ".md5", ".sha256", ".manifest.json"):
        f = host.file(path + suffix)
        assert f.is_file, path + suffix
        assert (f.user, f.mode) == ("postgres", 0o600)
    host.run_expect([0], f"cd {BACKUP_DIR} && md5sum -c {daily_run}.md5 && sha256sum -c {daily_run}.sha256")
    manifest = json.loads(host.file(path + ".manifest.json").content_string)
    assert json.dumps(manifest).count("patients") >= 1
    log = host.file(LOG).content_string
    assert re.search(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ", log, re.M), log


def test_daily_mail_carries_the_runs_summary(host, daily_run, daily_mail):
    """With the defaults (backup_cron_mail: always) a successful run is mailed: outcome, then its log lines."""
    mail = daily_mail.splitlines()
    assert re.fullmatch(r"doctorq-backup backup on \S+: succeeded", mail[0]) and mail[1] == "", mail
    assert any(re.fullmatch(r"\[[-0-9: ]{19}\] Backup completed successfully", line) for line in mail), mail
    assert any(daily_run in line for line in mail), mail  # the file it made
    assert "\n".join(mail[2:]) in host.file(LOG).content_string  # the same lines reached the log file
    if S3_SECRET:
        assert S3_SECRET not in daily_mail


_NO_SUCH_DB = ("import json, sys; c = json.load(open(sys.argv[1])); c['databases'] = ['no_such_db']; "
               "json.dump(c, open(sys.argv[1], 'w'))")


def _run_with_missing_database(host, command: str):
    """Run a cron line's command with a copy of the config whose only database does not exist."""
    bad = "/tmp/doctorq-mail-test.json"
    host.run_expect([0], f"install -o postgres -g postgres -m 0600 {CONFIG} {bad}")
    try:
        host.run_expect([0], f"runuser -u postgres -- python3 -c {shlex.quote(_NO_SUCH_DB)} {bad}")
        return _as_cron(host, command.replace(CONFIG, bad))
    finally:
        host.run(f"rm -f {bad}")


def test_failed_run_mails_its_log_lines_and_error(host, daily_run):  # pylint: disable=unused-argument
    """The daily line with a database that does not exist: the mail says FAILED, then the log lines and the error."""
    command = _cron_command(host, "backup").replace(f" {LOG} ", " - ")
    result = _run_with_missing_database(host, command)
    assert result.rc == 1, result.stdout
    mail = result.stdout.splitlines()
    assert re.fullmatch(r"doctorq-backup backup on \S+: FAILED \(exit 1\)", mail[0]), mail
    assert any(re.fullmatch(r"\[[-0-9: ]{19}\] ERROR: database 'no_such_db' does not exist.*", line)
               for line in mail), mail
    assert mail[-1].startswith("doctorq-backup: no_such_db: database 'no_such_db' does not exist"), mail
    # backup_cron_mail: failure mails the same for a failed run, and nothing for a successful one
    failure_only = command.replace(f"{RUNNER} always ", f"{RUNNER} failure ")
    again = _run_with_missing_database(host, failure_only).stdout.splitlines()
    assert (again[0], again[-1]) == (mail[0], mail[-1]), again
    quiet = _as_cron(host, _cron_command(host, "promote-weekly").replace(f"{RUNNER} always ", f"{RUNNER} failure "))
    assert (quiet.rc, quiet.stdout) == (0, ""), quiet.stdout


def test_stock_restore(host, daily_run):
    """The README's one-line restore with stock tools gives the same rows."""
    want = _psql(host, "doctorq", ROWS_SQL)
    host.run_expect([0], "runuser -u postgres -- dropdb --if-exists molecule_restored")
    host.run_expect([0], "runuser -u postgres -- createdb molecule_restored")
    restore = f"zstd -dc {BACKUP_DIR}/{daily_run} | pg_restore --no-owner -d molecule_restored"
    host.run_expect([0], f"runuser -u postgres -- sh -c {shlex.quote(restore)}")
    assert _psql(host, "molecule_restored", ROWS_SQL) == want


def test_list_shows_it(host, daily_run):
    out = host.check_output(f"runuser -u postgres -- {WRAPPER} list --config {CONFIG} --database doctorq")
    assert daily_run.split(".")[0] in out


@pytest.mark.skipif(not S3_ENDPOINT, reason="no S3 server given (scripts/molecule.sh provides one)")
def test_backup_is_in_s3(daily_run):
    import boto3  # pylint: disable=import-outside-toplevel

    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1",
                      aws_access_key_id=os.environ["DOCTORQ_SEAWEED_ACCESS_KEY"], aws_secret_access_key=S3_SECRET)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix="molecule/doctorq/").get("Contents", [])]
    for suffix in ("", ".md5", ".sha256", ".manifest.json"):
        assert any(k.endswith("/" + daily_run + suffix) for k in keys), (daily_run + suffix, keys)


def test_weekly_line_promotes(host, daily_run):
    command = _cron_command(host, "promote-weekly")
    result = host.run(f"runuser -u postgres -- env -i PATH=/usr/bin:/bin sh -c {shlex.quote(command)}")
    assert result.rc == 0, f"{command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert host.file(f"{BACKUP_DIR}/weekly/{daily_run}").is_file
    inodes = host.check_output(f"stat -c %i {BACKUP_DIR}/{daily_run} {BACKUP_DIR}/weekly/{daily_run}").split()
    assert inodes[0] == inodes[1]  # a hard link, no second copy


# ---------------------------------------------------------------- the playbooks (side_effect.yml)


@pytest.mark.parametrize("name", ["drill_doctorq.json", "drill_files_pgconf.json"])
def test_drill_playbook_wrote_a_successful_report(host, name):
    report = json.loads(host.file(f"{DRILL_REPORTS}/{name}").content_string)
    assert report["status"] == "success", report
    assert report["rto_s"] > 0 and 0 <= report["rpo_s"] < 3600, report
    assert report["backup_id"], report


def test_drill_left_no_scratch_database(host):
    names = _psql(host, "postgres", "SELECT string_agg(datname, ' ') FROM pg_database")
    assert "__drill_" not in names, names


def test_restore_playbook_replaced_the_database_and_kept_the_old_one(host):
    """The row written after the on-demand backup is gone from doctorq, and kept in the previous database."""
    assert _psql(host, "doctorq", "SELECT count(*) FROM patients WHERE id = -1") == "0"
    previous = _psql(host, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'doctorq__pre_restore_%'")
    assert previous, "swap mode keeps the replaced database"
    assert _psql(host, previous, "SELECT name FROM patients WHERE id = -1") == "written after the backup"


def test_restore_playbook_audited_the_refusal_and_the_restore(host):
    lines = host.check_output(f"cat {BACKUP_DIR}/restore_audit.jsonl").splitlines()
    entries = [json.loads(line) for line in lines if line.strip() and json.loads(line)["name"] == "doctorq"]
    refused = [e for e in entries if e["status"] == "failure" and "confirm=doctorq" in e["error"]]
    done = [e for e in entries if e["status"] == "success" and e["mode"] == "swap"]
    assert refused and not refused[-1]["safety_backup"], entries
    assert done and done[-1]["previous_database"].startswith("doctorq__pre_restore_"), entries
    safety = done[-1]["safety_backup"]
    assert safety, done[-1]
    path = safety["path"] if isinstance(safety, dict) else safety
    assert host.file(path).is_file and host.file(path + ".manifest.json").is_file, safety


def test_restore_files_playbook_restored_the_server_configuration(host):
    for name in ("postgresql.conf", "pg_hba.conf"):
        original, restored = host.file(f"{PGCONF}/{name}"), host.file(f"{PGCONF_RESTORED}{PGCONF}/{name}")
        assert restored.is_file, restored.path
        assert (restored.sha256sum, restored.mode, restored.user) == (original.sha256sum, original.mode, original.user)


@pytest.mark.skipif(not S3_ENDPOINT, reason="no S3 server given (scripts/molecule.sh provides one)")
def test_file_backup_is_in_s3():
    import boto3  # pylint: disable=import-outside-toplevel

    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1",
                      aws_access_key_id=os.environ["DOCTORQ_SEAWEED_ACCESS_KEY"], aws_secret_access_key=S3_SECRET)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix="molecule/files/pgconf/").get("Contents", [])]
    assert any(k.endswith(".manifest.json") for k in keys), keys


# ---------------------------------------------------------------- the drill's cron line, for real


def test_drill_cron_line_mails_the_outcome_and_the_drills_summary(host, daily_run):  # pylint: disable=unused-argument
    """The weekly database drill as cron runs it: with the drill role's default (drill_cron_mail: always) the mail is
    the outcome line, then the drill's log lines (RTO, RPO), the lines the drill log gets."""
    for line in host.file(DRILL_CRON).content_string.splitlines():
        fields = line.split(None, 6)
        if len(fields) == 7 and not line.startswith("#") and f" {WRAPPER} drill " in fields[6]:
            assert fields[5] == "postgres"
            command = fields[6]
            break
    else:
        raise AssertionError("no cron line runs the database drill")
    result = _as_cron(host, command)
    assert result.rc == 0 and result.stderr == "", f"{command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    mail = result.stdout.splitlines()
    assert re.fullmatch(r"doctorq-backup drill on \S+: succeeded", mail[0]) and mail[1] == "", mail
    assert any(re.fullmatch(r"\[[-0-9: ]{19}\] Restore drill of doctorq: success; RTO [0-9.]+s, RPO [0-9]+s", line)
               for line in mail), mail
    assert "\n".join(mail[2:]) in host.file(DRILL_LOG).content_string  # the same lines reached the drill log
    if S3_SECRET:
        assert S3_SECRET not in result.stdout
