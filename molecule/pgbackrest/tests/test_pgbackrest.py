"""The database host after the pgbackrest role: real state, then real backups into SeaweedFS.

Run by molecule's testinfra verifier with the podman backend (see molecule.yml).
"""

from __future__ import annotations

import json
import shlex

CONF = "/etc/pgbackrest/pgbackrest.conf"
CRON = "/etc/cron.d/doctorq-pgbackrest"
PGBR = f"runuser -u postgres -- pgbackrest --config={CONF} --stanza=main"


def _psql(host, sql: str) -> str:
    return host.check_output(f"runuser -u postgres -- psql -XAtq -d postgres -c {shlex.quote(sql)}")


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


def test_cron_weekly_full_and_six_hourly_incremental(host):
    lines = [line for line in host.file(CRON).content_string.splitlines() if line and not line.startswith("#")]
    assert "MAILTO=dba@example.com" in lines
    jobs = [line.split(None, 6) for line in lines if line[0].isdigit()]
    assert ["0", "1", "*", "*", "0", "postgres", f"pgbackrest --config={CONF} --stanza=main backup --type=full"
            + " >>/var/log/pgbackrest/doctorq-cron.log"] in jobs
    incr = [j for j in jobs if "--type=incr" in j[6]]
    assert {(j[1], j[4]) for j in incr} == {("1", "1,2,3,4,5,6"), ("7,13,19", "*")}


def test_full_then_incremental_backup_listed(host):
    for kind in ("full", "incr"):
        out = host.run(f"{PGBR} backup --type={kind}")
        assert out.rc == 0, out.stderr + out.stdout
    info = json.loads(host.check_output(f"{PGBR} --output=json info"))[0]
    types = [b["type"] for b in info["backup"]]
    assert types[-2:] == ["full", "incr"]
    assert info["backup"][-1]["prior"] == info["backup"][-2]["label"]
    assert info["cipher"] == "aes-256-cbc" and info["status"]["code"] == 0
