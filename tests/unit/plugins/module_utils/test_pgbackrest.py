"""The pgBackRest engine's pure parts: configuration, catalog parsing, the recoverable window, options."""
from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import (
    Lineage, PgBackRest, Repo, Stanza, StanzaInfo, archive_command, conf_settings, last_commit_in_waldump,
    parse_history, parse_lsn, previous_segment, render_conf, secret_env, window_of,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pitr import PitrJob
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "pgbackrest")
UTC = dt.timezone.utc


def s3(**kw) -> S3Config:
    base = dict(bucket="backups", endpoint_url="https://s3.internal:9000", region="eu-west-1", access_key="AKIA1",
                secret_key="s3cr3t/+", encryption="AES256")
    base.update(kw)
    return S3Config(**base)


def parsed(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keep the case
    parser.read_string(text)
    return {section: dict(parser.items(section, raw=True)) for section in parser.sections()}


# --------------------------------------------------------------------------
# configuration


def test_s3_compatible_endpoint_becomes_path_style_host_and_port():
    repo = Repo.from_s3(s3(), "pgbackrest/db1", ca_file="/etc/ssl/ca.pem")
    conf = parsed(render_conf(Stanza(pg_data="/data", pg_port=5433), repo))
    g = conf["global"]
    assert (g["repo1-type"], g["repo1-path"], g["repo1-s3-bucket"]) == ("s3", "/pgbackrest/db1", "backups")
    assert (g["repo1-s3-endpoint"], g["repo1-storage-port"], g["repo1-s3-uri-style"]) == ("s3.internal", "9000", "path")
    assert g["repo1-s3-region"] == "eu-west-1" and g["repo1-storage-ca-file"] == "/etc/ssl/ca.pem"
    assert "repo1-storage-verify-tls" not in g
    assert (g["repo1-retention-full-type"], g["repo1-retention-full"]) == ("time", "7")
    assert g["archive-async"] == "y" and g["repo1-bundle"] == "y"
    assert conf["main"] == {"pg1-path": "/data", "pg1-port": "5433", "pg1-socket-path": "/var/run/postgresql"}


def test_aws_without_endpoint_is_host_style_on_the_regional_endpoint():
    repo = Repo.from_s3(s3(endpoint_url=None, access_key=None, secret_key=None), "pgbackrest/x")
    g = parsed(render_conf(Stanza(), repo))["global"]
    assert (g["repo1-s3-endpoint"], g["repo1-s3-uri-style"]) == ("s3.eu-west-1.amazonaws.com", "host")
    assert "repo1-storage-port" not in g
    # no keys: the instance's IAM role
    assert g["repo1-s3-key-type"] == "auto" and "repo1-s3-key" not in g


def test_plain_http_is_refused_pgbackrest_speaks_tls_only():
    with pytest.raises(ConfigError, match="TLS only"):
        Repo.from_s3(s3(endpoint_url="http://127.0.0.1:8333"), "p")


def test_kms_self_signed_and_cipher():
    repo = Repo.from_s3(s3(encryption="aws:kms", kms_key_id="alias/pg", validate_certs=False), "p", cipher_pass="pass phrase")
    g = parsed(render_conf(Stanza(), repo))["global"]
    assert g["repo1-s3-kms-key-id"] == "alias/pg"
    assert g["repo1-storage-verify-tls"] == "n"
    assert (g["repo1-cipher-type"], g["repo1-cipher-pass"]) == ("aes-256-cbc", "pass phrase")


def test_secrets_can_stay_out_of_the_file_and_go_through_the_environment():
    repo = Repo.from_s3(s3(session_token="tok"), "p", cipher_pass="cp")
    text = render_conf(Stanza(), repo, secrets=False)
    for secret in ("s3cr3t/+", "tok", "cp", "AKIA1"):
        assert secret not in text
    assert "repo1-cipher-type=aes-256-cbc" in text
    assert secret_env(repo) == {"PGBACKREST_REPO1_S3_KEY": "AKIA1", "PGBACKREST_REPO1_S3_KEY_SECRET": "s3cr3t/+",
                                "PGBACKREST_REPO1_S3_TOKEN": "tok", "PGBACKREST_REPO1_CIPHER_PASS": "cp"}


def test_a_line_break_cannot_inject_settings():
    repo = dataclasses.replace(Repo.from_s3(s3(), "p"), secret_key="x\nrepo1-path=/elsewhere")
    with pytest.raises(ConfigError, match="line break"):
        render_conf(Stanza(), repo)


def test_argv_never_carries_a_secret():
    engine = PgBackRest("/etc/pgbackrest/pgbackrest.conf", "main", env={"PGBACKREST_REPO1_S3_KEY_SECRET": "s3cr3t"},
                        binary="/bin/true")
    argv = engine.argv("backup", "--type=incr")
    assert argv[0] == "/bin/true", "pgBackRest's own argv: procs runs it as the database OS user"
    assert argv[-2:] == ["--type=incr", "backup"] and "s3cr3t" not in " ".join(argv)
    assert engine.env()["PGBACKREST_REPO1_S3_KEY_SECRET"] == "s3cr3t"
    assert engine.argv("archive-get", params=("000000010000000000000001", "/tmp/x"))[-3:] == [
        "archive-get", "000000010000000000000001", "/tmp/x"]
    assert engine.scrub("failed: s3cr3t") == "failed: <redacted>"
    assert archive_command("/etc/pgbackrest/pgbackrest.conf", "main") == \
        "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=main archive-push %p"


def test_bad_stanza_names_are_refused():
    with pytest.raises(ConfigError, match="stanza"):
        PgBackRest("/c", "main; rm -rf /", binary="/bin/true")


# The role's template and the engine must write the same configuration.
ROLE_CASES = [
    dict(s3=dict(bucket="b", endpoint_url="https://s3.internal:9000", region="eu-west-1", access_key="AK",
                 secret_key="SK", encryption="AES256"), ca="/ca.pem", cipher="cp"),
    dict(s3=dict(bucket="b", region="us-east-2", encryption="aws:kms", kms_key_id="alias/k", validate_certs=False),
         ca="", cipher=""),
    dict(s3=dict(bucket="b", endpoint_url="https://minio.example", access_key="AK", secret_key="SK",
                 session_token="ST", addressing_style="virtual"), ca="", cipher=""),
]


# Rendered in a child process: ansible's controller-side templating changes process-wide state (how module
# warnings are reported) that the in-process module runner of other tests relies on.
_RENDER = r"""
import json, sys
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
role, extra = sys.argv[1], json.loads(sys.stdin.read())
with open(role + "/defaults/main.yml", encoding="utf-8") as handle:
    # the role's defaults are templates themselves, as Ansible reads them
    variables = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in yaml.safe_load(handle).items()}
variables.update(extra)
with open(role + "/templates/pgbackrest.conf.j2", encoding="utf-8") as handle:
    template = handle.read()
templar = Templar(loader=DataLoader(), variables=variables)
names = ("pgbackrest_repo_path", "pgbackrest_pg_data", "pgbackrest_pg_port", "pgbackrest_pg_socket_path")
print(json.dumps({"text": str(templar.template(trust_as_template(template))),
                  "vars": {n: str(templar.template(variables[n])) for n in names}}))
"""


@pytest.mark.parametrize("case", ROLE_CASES)
def test_role_template_writes_what_the_engine_writes(case):
    extra = dict(pgbackrest_s3=case["s3"], pgbackrest_ca_file=case["ca"], pgbackrest_cipher_pass=case["cipher"],
                 inventory_hostname="db1", ansible_managed="managed", pgbackrest_stanza="pg15")
    child = subprocess.run([sys.executable, "-c", _RENDER, ROLE], input=json.dumps(extra), capture_output=True,
                           text=True, check=True, timeout=120)
    rendered = json.loads(child.stdout)
    from_role = parsed(rendered["text"])
    var = rendered["vars"]
    repo = Repo.from_s3(S3Config(**case["s3"]), var["pgbackrest_repo_path"], ca_file=case["ca"] or None,
                        cipher_pass=case["cipher"] or None)
    stanza = Stanza(name="pg15", pg_data=var["pgbackrest_pg_data"], pg_port=int(var["pgbackrest_pg_port"]),
                    pg_socket_path=var["pgbackrest_pg_socket_path"])
    from_engine = {section: {k: ("y" if v is True else "n" if v is False else str(v)) for k, v in options.items()}
                   for section, options in conf_settings(stanza, repo).items()}
    assert from_role == from_engine


# --------------------------------------------------------------------------
# catalog and window

INFO = [{
    "name": "main", "cipher": "none",
    "db": [{"id": 1, "repo-key": 1, "system-id": 7, "version": "14"}, {"id": 2, "repo-key": 1, "system-id": 8, "version": "15"}],
    "archive": [{"database": {"id": 1}, "id": "14-1", "min": "000000010000000000000001", "max": "000000010000000000000009"},
                {"database": {"id": 2}, "id": "15-2", "min": "000000010000000000000002", "max": "00000002000000000000000A"}],
    "backup": [
        {"label": "old-F", "type": "full", "prior": None, "database": {"id": 1}, "timestamp": {"start": 100, "stop": 200},
         "archive": {"start": "1", "stop": "2"}, "info": {"size": 1, "delta": 1, "repository": {"size": 1, "delta": 1}}},
        {"label": "20251102-010002F", "type": "full", "prior": None, "database": {"id": 2},
         "timestamp": {"start": 1762045202, "stop": 1762045240},
         "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000003"},
         "lsn": {"start": "0/2000028", "stop": "0/3000050"},
         "info": {"size": 23000000, "delta": 23000000, "repository": {"size": 2800000, "delta": 2800000}}},
        {"label": "20251102-010002F_20251102-070001I", "type": "incr", "prior": "20251102-010002F", "database": {"id": 2},
         "timestamp": {"start": 1762066801, "stop": 1762066804},
         "archive": {"start": "000000010000000000000005", "stop": "000000010000000000000005"},
         "lsn": {"start": "0/5000028", "stop": "0/5000100"},
         "info": {"size": 23000000, "delta": 8000, "repository": {"size": 2800000, "delta": 400}}},
    ],
    "repo": [{"key": 1, "status": {"code": 0, "message": "ok"}}],
    "status": {"code": 0, "message": "ok"},
}]


def test_info_keeps_the_current_cluster_only_oldest_first():
    info = StanzaInfo.parse(INFO, "main")
    assert [b.label for b in info.backups] == ["20251102-010002F", "20251102-010002F_20251102-070001I"]
    assert (info.pg_version, info.system_id, info.archive_max) == ("15", 8, "00000002000000000000000A")
    incr = info.backups[-1]
    assert (incr.kind, incr.prior, incr.repo_delta, incr.delta) == ("incremental", "20251102-010002F", 400, 8000)
    assert incr.summary()["started_at"] == "2025-11-02T07:00:01Z"


def test_window_from_oldest_backup_end_to_just_before_the_newest_commit():
    info = StanzaInfo.parse(INFO, "main")
    last = dt.datetime(2025, 11, 2, 9, 30, 0, 500000, tzinfo=UTC)
    window = window_of(info, last)
    assert window.start == dt.datetime(2025, 11, 2, 1, 0, 41, tzinfo=UTC)  # stop 01:00:40 + 1 s
    assert window.end == last - dt.timedelta(microseconds=1)
    assert window.contains(dt.datetime(2025, 11, 2, 8, 0, tzinfo=UTC))
    assert not window.contains(dt.datetime(2025, 11, 2, 1, 0, 40, tzinfo=UTC))
    assert not window.contains(last)  # no commit after it: PostgreSQL would never stop
    chosen = window_of(info, last, "20251102-010002F_20251102-070001I")
    assert chosen.start == dt.datetime(2025, 11, 2, 7, 0, 5, tzinfo=UTC)
    with pytest.raises(ConfigError, match="not a usable backup"):
        window_of(info, last, "nope")
    assert window_of(info, None).end is None


def test_last_commit_from_waldump_output():
    text = """
rmgr: Heap        len (rec/tot):     54/    54, tx:        726, lsn: 0/06001B90, prev 0/06001B58, desc: INSERT off 3
rmgr: Transaction len (rec/tot):     34/    34, tx:        727, lsn: 0/06001BD8, prev 0/06001B90, desc: COMMIT 2026-11-27 14:03:12.891734 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        728, lsn: 0/06001C00, prev 0/06001BD8, desc: ABORT 2026-11-27 14:03:12.963539 UTC
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/06001C90, prev 0/06001C28, desc: SWITCH
"""
    assert last_commit_in_waldump(text) == dt.datetime(2026, 11, 27, 14, 3, 12, 963539, tzinfo=UTC)
    assert last_commit_in_waldump("desc: COMMIT 2026-11-27 16:03:12 +02") == dt.datetime(2026, 11, 27, 14, 3, 12, tzinfo=UTC)
    assert last_commit_in_waldump("desc: CHECKPOINT_ONLINE redo 0/2000028") is None


def test_only_backups_on_the_newest_timelines_line_can_start_a_recovery():
    # timeline 2 branched off timeline 1 at 0/C0001B8 (a point-in-time recovery)
    history = "1\t0/C0001B8\tbefore 2025-11-02 10:42:00.000001+00\n"
    line = Lineage(2, parse_history(history))
    assert line.ends == {1: parse_lsn("0/C0001B8")} and parse_lsn("1/0") == 1 << 32
    info = StanzaInfo.parse(INFO, "main")
    before_fork, after_fork = info.backups  # stop at 0/3000050 and 0/5000100, on timeline 1
    assert line.on_it(before_fork)
    abandoned = dataclasses.replace(after_fork, lsn_stop="0/D000100")
    assert not line.on_it(abandoned)
    assert line.on_it(dataclasses.replace(after_fork, wal_start="00000002000000000000000E", lsn_stop="0/E000100"))
    assert not Lineage(3, {2: 5}).on_it(before_fork)  # timeline 1 is no ancestor of that timeline 3
    window = window_of(info, None, line=Lineage(2, {1: parse_lsn("0/2000000")}))
    assert window.start is None, "no backup ended before the fork"


def test_previous_segment():
    assert previous_segment("000000010000000000000005") == "000000010000000000000004"
    assert previous_segment("000000010000000200000000") == "0000000100000001000000FF"
    assert previous_segment("000000010000000000000000") is None
    assert previous_segment("00000002.history") is None


# --------------------------------------------------------------------------
# PITR options


def pitr(**kw):
    base = dict(target="time", target_time="2025-11-07T10:42:00Z", backup_dir="/b")
    base.update(kw)
    return PitrJob.from_params(base)


def test_pitr_options():
    job = pitr()
    assert job.target_time == dt.datetime(2025, 11, 7, 10, 42, tzinfo=UTC) and job.into == "scratch" and job.keep_scratch
    assert pitr(target_time="2025-11-07 12:42:00+02:00").target_time == job.target_time
    assert pitr(target_time="2025-11-07T10:42:00").target_time == job.target_time  # UTC without an offset
    drill = pitr(target=None, target_time=None, drill=True)
    assert drill.target == "time" and drill.target_time is None and not drill.keep_scratch
    with pytest.raises(ConfigError, match="needs target_time"):
        pitr(target_time=None)
    with pytest.raises(ConfigError, match="not a date"):
        pitr(target_time="yesterday")
    with pytest.raises(ConfigError, match="only used with target=time"):
        pitr(target="end")
    with pytest.raises(ConfigError, match="target_name"):
        pitr(target="name", target_time=None)
    with pytest.raises(ConfigError, match="never touches the live"):
        pitr(drill=True, into="live")
