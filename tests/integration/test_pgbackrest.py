"""pgBackRest physical backups and point-in-time recovery (issue 6, "Done when").

A real PostgreSQL 15 cluster with archive_mode on (archive_command =
pgbackrest archive-push, asynchronous) and a real SeaweedFS as the S3
repository. pgBackRest speaks S3 over TLS only, so this file runs its own
SeaweedFS with its HTTPS listener on (a throwaway CA; pgBackRest verifies
the certificate) instead of the shared plain-HTTP one; the buckets are made
through its HTTP port. Everything pgBackRest runs as the postgres OS user.

Covered: archiving proven by ``check``; a full then an incremental backup
through pgbackrest_backup, listed with the recoverable window by
backup_info, and pg_backup's deprecated physical kinds;
rows written at t1 and t2 and a recovery to a time between them showing
exactly the t1 rows (scratch and live); targets outside the window refused
with nothing touched; the PITR drill into a scratch cluster on another port;
secrets never in argv, logs or results.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import glob
import http.server
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest

import testbed
from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgBackRestError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import PgBackRest
from ansible_collections.doctorq.backup.plugins.module_utils.physical_backup import PhysicalBackupJob, run_physical_backup
from role_support import render_role_template
from task_support import run_task
from testbed import LOCALHOST, PgServer, S3Server, empty_bucket

LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")
STANZA = "main"


# --------------------------------------------------------------------------
# servers: SeaweedFS with TLS, PostgreSQL with archiving


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, cwd="/")


def _make_ca(directory: str) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1."""
    ca_key, ca_crt = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
    key, csr, crt = (os.path.join(directory, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(directory, "ext.cnf")
    with open(ext, "w", encoding="ascii") as handle:
        handle.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                     "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
          "-subj", "/CN=doctorq test CA"])
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"])
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
          "-days", "2", "-extfile", ext])
    os.chmod(ca_crt, 0o644)
    return ca_crt, crt, key


class TlsSeaweed:
    """`weed mini` as in scripts/testbed.py, plus its S3 HTTPS listener (what pgBackRest needs)."""

    def __init__(self, root: str, cert: str, key: str) -> None:
        self.root = root
        self.cert, self.key = cert, key
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.https_port = 0
        self.http: S3Server | None = None

    def start(self) -> "TlsSeaweed":
        for sub in ("data", "logs"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        access_key, secret_key = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        s3_json = os.path.join(self.root, "s3.json")
        testbed._write_private(s3_json, json.dumps({"identities": [{  # pylint: disable=protected-access
            "name": "doctorq-test", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        last = ""
        for _attempt in range(3):
            names = [n for comp, _h, _g in testbed._WEED_PORT_FLAGS for n in (comp, comp + ".grpc")]  # pylint: disable=protected-access
            free = testbed.free_ports(len(names) + 1)
            self.ports, self.https_port = dict(zip(names, free)), free[-1]
            argv = [testbed._venv_bin("weed"), f"-logdir={self.root}/logs", "mini", f"-dir={self.root}/data",  # pylint: disable=protected-access
                    f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}", "-master.telemetry=false", f"-s3.config={s3_json}",
                    "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                    f"-s3.localSocket={self.root}/s3.sock", f"-filer.localSocket={self.root}/filer.sock",
                    f"-s3.cert.file={self.cert}", f"-s3.key.file={self.key}", f"-s3.port.https={self.https_port}"]
            for comp, http_flag, grpc_flag in testbed._WEED_PORT_FLAGS:  # pylint: disable=protected-access
                argv += [f"{http_flag}={self.ports[comp]}", f"{grpc_flag}={self.ports[comp + '.grpc']}"]
            log_file = os.path.join(self.root, "weed.out")
            with open(log_file, "ab") as out:
                self.proc = subprocess.Popen(argv, cwd=self.root, stdin=subprocess.DEVNULL, stdout=out,  # pylint: disable=consider-using-with
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             env={**os.environ, "TMPDIR": self.root})
            self.http = S3Server("SeaweedFS", f"http://{LOCALHOST}:{self.ports['s3']}", access_key, secret_key)
            try:
                self.http.wait_ready(60, alive=lambda: self.proc.poll() is None, log=log_file)
                self._wait_https()
                return self
            except testbed.TestbedError as exc:
                last = str(exc)
                self.stop()
        raise testbed.TestbedError(f"SeaweedFS with TLS did not start: {last}")

    def _wait_https(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if testbed._port_open(self.https_port):  # pylint: disable=protected-access
                return
            time.sleep(0.2)
        raise testbed.TestbedError(f"the HTTPS port {self.https_port} did not open")

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.https_port}"

    def stop(self) -> None:
        testbed.stop_weed(self.proc.pid if self.proc else None, self.ports, self.proc)
        self.proc = None


class ArchivingPostgres(testbed.Postgres):
    """The test bed's cluster, with WAL archiving through pgBackRest from the first start."""

    def __init__(self, base_dir: str, config: str) -> None:
        super().__init__(base_dir)
        self.config = config

    def _configure(self, port: int) -> None:
        super()._configure(port)
        with open(os.path.join(self.data_dir, "postgresql.auto.conf"), "a", encoding="utf-8") as handle:
            handle.write(f"wal_level = 'replica'\narchive_mode = 'on'\n"
                         f"archive_command = 'pgbackrest --config={self.config} --stanza={STANZA} archive-push %p'\n")


def _chown(path: str) -> None:
    entry = pwd.getpwnam("postgres")
    os.chown(path, entry.pw_uid, entry.pw_gid)


def write_conf(path: str, variables: dict[str, Any]) -> None:
    """pgbackrest.conf as the pgbackrest role writes it (its template), 0640, owned by postgres."""
    text = render_role_template("pgbackrest", "pgbackrest.conf.j2", {"ansible_managed": "test", **variables})
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o640)
    _chown(path)


@pytest.fixture(scope="module")
def bed() -> Iterator[dict[str, Any]]:
    """SeaweedFS (TLS) + a bucket + PostgreSQL 15 archiving to it + a created stanza."""
    root = tempfile.mkdtemp(prefix="doctorq-pgbr-")
    os.chmod(root, 0o711)
    tls = os.path.join(root, "tls")
    os.makedirs(tls, mode=0o755)
    ca, cert, key = _make_ca(tls)
    weed = TlsSeaweed(os.path.join(root, "seaweed"), cert, key).start()
    bucket = f"pgbr-{secrets.token_hex(4)}"
    weed.http.client().create_bucket(Bucket=bucket)
    pgbr_dir = os.path.join(root, "pgbackrest")
    for sub in ("", "spool", "log", "lock"):
        os.makedirs(os.path.join(pgbr_dir, sub), mode=0o750, exist_ok=True)
        _chown(os.path.join(pgbr_dir, sub))
    config = os.path.join(pgbr_dir, "pgbackrest.conf")
    cipher = secrets.token_urlsafe(24)
    pg = ArchivingPostgres(root, config)
    # the role's variables: the repository in the bucket under its own path, the cluster, pgBackRest's directories
    role_vars = {"pgbackrest_s3": {"bucket": bucket, "endpoint_url": weed.endpoint, "region": "us-east-1",
                                   "access_key": weed.http.access_key, "secret_key": weed.http.secret_key,
                                   "encryption": "none"},
                 "pgbackrest_repo_path": "pgbackrest/db1", "pgbackrest_ca_file": ca, "pgbackrest_cipher_pass": cipher,
                 "pgbackrest_stanza": STANZA, "pgbackrest_pg_data": pg.data_dir, "pgbackrest_pg_port": 5432,
                 "pgbackrest_pg_socket_path": pg.socket_dir, "pgbackrest_spool_path": os.path.join(pgbr_dir, "spool"),
                 "pgbackrest_log_path": os.path.join(pgbr_dir, "log"),
                 "pgbackrest_lock_path": os.path.join(pgbr_dir, "lock"), "pgbackrest_process_max": 4,
                 "pgbackrest_retention_days": 7}
    confs = os.path.join(root, "confs")  # other configurations tests write (postgres must reach them)
    os.makedirs(confs, mode=0o755)
    try:
        write_conf(config, role_vars)  # archive_command needs it from the first start
        server = pg.start()
        role_vars["pgbackrest_pg_port"] = server.port
        write_conf(config, role_vars)
        engine = PgBackRest(config, STANZA)
        engine.run("stanza-create", timeout=600)  # as the role does
        backup_dir = os.path.join(root, "backups")
        os.makedirs(backup_dir, mode=0o700)
        yield {"root": root, "weed": weed, "bucket": bucket, "role_vars": role_vars, "config": config,
               "pg": pg, "server": server, "engine": engine, "backup_dir": backup_dir, "ca": ca, "cipher": cipher,
               "secret_key": weed.http.secret_key,
               "pgbr_dir": pgbr_dir, "confs": confs}
    finally:
        for data in glob.glob(os.path.join(root, "*_pitr*")) + glob.glob(os.path.join(root, "pg", "*_pitr*")):
            testbed.stop_cluster(pg.bin_dir, data)
        pg.stop()
        with contextlib.suppress(Exception):
            empty_bucket(weed.http.client(), bucket)
        weed.stop()
        shutil.rmtree(root, ignore_errors=True)
        if os.path.dirname(pg.root) != root:
            shutil.rmtree(os.path.dirname(pg.root), ignore_errors=True)


@pytest.fixture(scope="module")
def base_backup(bed: dict[str, Any]) -> dict[str, Any]:
    """One full backup made by the engine, so every test has something to recover from."""
    result = run_physical_backup(PhysicalBackupJob(level="full", config=bed["config"], stanza=STANZA,
                                                   log_dir=bed["backup_dir"]))
    assert not result.get("failed"), result.get("msg")
    return result["backup"]


def pg_module_args(bed: dict[str, Any], **extra: Any) -> dict[str, Any]:
    server: PgServer = bed["server"]
    return {"login_host": server.host, "login_port": server.port, "login_user": server.user,
            "login_password": server.password, "stanza": STANZA, "pgbackrest_config": bed["config"],
            "backup_dir": bed["backup_dir"], **extra}


def pitr_args(bed: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """pg_pitr_restore's options: the connection, the stanza, the run logs and lock in log_dir."""
    args = pg_module_args(bed, **extra)
    args["log_dir"] = args.pop("backup_dir")
    return args


def backup_module_args(bed: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """pgbackrest_backup's options: no connection options (pgBackRest reaches the cluster through its config)."""
    return {"stanza": STANZA, "pgbackrest_config": bed["config"], "log_dir": bed["backup_dir"], **extra}


def s3_keys(bed: dict[str, Any], prefix: str) -> list[str]:
    client = bed["weed"].http.client()
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bed["bucket"], Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def write_rows(server: PgServer, table: str) -> dict[str, Any]:
    """Rows 1-10 committed at t1, rows 11-20 at t2, and a time strictly between the two commits."""
    server.query(f"CREATE TABLE {table} (id integer PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    server.query(f"INSERT INTO {table} (id) SELECT generate_series(1, 10)")
    t1 = server.query(f"SELECT max(at) FROM {table}")[0][0]
    time.sleep(1.2)
    between = server.query("SELECT clock_timestamp()")[0][0]
    time.sleep(1.2)
    server.query(f"INSERT INTO {table} (id) SELECT generate_series(11, 20)")
    t2 = server.query(f"SELECT max(at) FROM {table}")[0][0]
    assert t1 < between < t2
    return {"t1": t1, "between": between, "t2": t2}


def scratch_query(scratch: dict[str, Any], sql: str, dbname: str = "postgres") -> list[tuple]:
    import psycopg2  # pylint: disable=import-outside-toplevel

    conn = psycopg2.connect(host=scratch["socket_dir"], port=scratch["port"], user="postgres", dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


class Webhook:
    """Collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ArgvWatch:
    """Samples every process's argv while it runs, to prove no secret ever reaches one."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for path in glob.glob("/proc/[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    with open(path, "rb") as handle:
                        text = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
                    if "pgbackrest" in text or "runuser" in text:
                        self.seen.add(text)
            time.sleep(0.01)

    def __enter__(self) -> "ArgvWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------
# archiving and backups


def test_check_proves_archiving_into_seaweedfs(bed):
    server: PgServer = bed["server"]
    lines = bed["engine"].check()
    segment = next((m.group(1) for m in map(re.compile(r"WAL segment (\w{24}) successfully archived").search, lines) if m),
                   None)
    assert segment, lines
    deadline = time.monotonic() + 30
    while True:  # the archiver counts a segment once archive_command returned, after check saw it arrive
        archived, failed = server.query("SELECT archived_count, failed_count FROM pg_stat_archiver")[0]
        if archived or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert archived > 0 and failed == 0
    # the segment really is in the bucket, under the repository's own path, compressed and encrypted
    keys = s3_keys(bed, "pgbackrest/db1/archive/main/")
    assert any(os.path.basename(k).startswith(segment + "-") and k.endswith(".zst") for k in keys), (segment, keys[-5:])
    # client-side encryption: the repository's info file is not readable text in the bucket
    body = bed["weed"].http.client().get_object(Bucket=bed["bucket"], Key="pgbackrest/db1/archive/main/archive.info")["Body"].read()
    assert b"[db]" not in body and b"db-version" not in body


def test_wrong_secret_is_refused_clearly_and_never_echoed(bed):
    wrong = "WRONG" + secrets.token_hex(12)
    config = os.path.join(bed["confs"], "wrong.conf")
    s3 = {**bed["role_vars"]["pgbackrest_s3"], "secret_key": wrong}
    write_conf(config, {**bed["role_vars"], "pgbackrest_s3": s3})
    assert os.stat(config).st_mode & 0o777 == 0o640
    with pytest.raises(PgBackRestError) as err:
        PgBackRest(config, STANZA).info()
    message = str(err.value)
    assert "403" in message or "credentials" in message, message
    assert wrong not in message


def test_full_then_incremental_through_pgbackrest_backup(bed, base_backup, run_module, tmp_path):
    hook = Webhook()
    metrics = str(tmp_path / "metrics")
    os.makedirs(metrics)
    try:
        args = backup_module_args(bed, notification={"webhook_url": hook.url, "webhook_format": "json",
                                                     "metrics_dir": metrics})
        plan = run_module("pgbackrest_backup", {**args, "level": "incr"}, check_mode=True)
        assert not plan.get("failed"), plan.get("msg")
        newest = bed["engine"].info().usable()[-1].id
        assert plan["plan"]["level"] == plan["plan"]["requested_level"] == "incr" and plan["plan"]["prior"] == newest
        assert (plan["plan"]["name"], plan["plan"]["source_type"]) == (STANZA, "stanza")
        assert (plan["plan"]["kind"], plan["plan"]["type"], plan["plan"]["stanza"]) == ("incremental", "incr", STANZA)
        with ArgvWatch() as watch:
            full = run_module("pgbackrest_backup", {**args, "level": "full"})
            marker_at = bed["server"].query("SELECT now()")[0][0]
            bed["server"].query("CREATE TABLE incr_marker AS SELECT generate_series(1, 1000) AS i")
            incr = run_module("pgbackrest_backup", {**args, "level": "incr"})
    finally:
        hook.close()
    assert not full.get("failed"), full.get("msg")
    assert not incr.get("failed"), incr.get("msg")
    assert full["changed"] and incr["changed"]
    assert not [r.get("deprecations") for r in (plan, full, incr) if r.get("deprecations")]
    assert full["backup"]["level"] == full["backup"]["requested_level"] == "full"
    assert incr["backup"]["level"] == incr["backup"]["requested_level"] == "incr"
    assert (incr["backup"]["name"], incr["backup"]["source_type"]) == (STANZA, "stanza")
    assert incr["backup"]["prior"] == full["backup"]["id"]
    # the keys of before, beside the new ones until 1.0.0 (docs/DESIGN.md, "Words")
    assert (full["backup"]["kind"], full["backup"]["requested_kind"], full["backup"]["type"]) == ("physical_full",) * 2 + ("full",)
    assert (incr["backup"]["kind"], incr["backup"]["requested_kind"], incr["backup"]["type"]) == ("incremental",) * 2 + ("incr",)
    assert (incr["backup"]["label"], incr["backup"]["stanza"]) == (incr["backup"]["id"], STANZA)
    assert 0 < incr["backup"]["size"] < full["backup"]["size"]
    assert incr["backup"]["s3_uri"] == f"s3://{bed['bucket']}/pgbackrest/db1/backup/main/{incr['backup']['id']}"
    assert s3_keys(bed, f"pgbackrest/db1/backup/main/{incr['backup']['id']}/")
    # the same run log as logical backups, in the backup directory
    assert all(LOG_LINE.match(line) for line in incr["log"])
    assert any("INCR backup" in line and "finished" in line for line in incr["log"])
    assert os.path.exists(incr["log_file"]) and os.stat(incr["log_file"]).st_mode & 0o777 == 0o600
    # webhook and metrics, as for logical backups
    assert [(e["status"], e["name"], e["source_type"], e["level"], e["id"]) for e in hook.events] == [
        ("success", STANZA, "stanza", "full", full["backup"]["id"]), ("success", STANZA, "stanza", "incr", incr["backup"]["id"])]
    assert [(e["kind"], e["database"]) for e in hook.events] == [  # the keys of before, until 1.0.0
        ("physical_full", "pgbackrest/main"), ("incremental", "pgbackrest/main")]
    assert hook.events[1]["backup"]["id"] == incr["backup"]["id"]
    with open(os.path.join(metrics, "doctorq_backup_pgbackrest_main_incremental.prom"), encoding="utf-8") as handle:
        prom = handle.read()
    assert 'doctorq_backup_last_run_status{name="pgbackrest/main/incremental",database="pgbackrest/main/incremental"} 1' in prom
    # listed, newest first, with the recoverable window
    listing = run_module("backup_info", {"stanza": STANZA, "pgbackrest_config": bed["config"]})
    assert not listing.get("failed"), listing.get("msg")
    ids = [b["id"] for b in listing["physical_backups"]]
    assert ids[:2] == [incr["backup"]["id"], full["backup"]["id"]]
    assert ids[-1] == base_backup["id"]
    assert [(b["level"], b["label"], b["kind"], b["type"]) for b in listing["physical_backups"][:2]] == [
        ("incr", incr["backup"]["id"], "incremental", "incr"), ("full", full["backup"]["id"], "physical_full", "full")]
    window = listing["recoverable_window"]
    assert window["oldest_backup"] == base_backup["id"] and window["newest_backup"] == incr["backup"]["id"]
    start = dt.datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    assert start == dt.datetime.fromisoformat(base_backup["finished_at"].replace("Z", "+00:00")) + dt.timedelta(seconds=1)
    # the window ends at the newest commit in the archived WAL: the table made between the two backups
    assert marker_at <= end
    # secrets: never in argv, results or logs
    everything = json.dumps([full, incr, listing, hook.events])
    for secret in (bed["secret_key"], bed["cipher"]):
        assert secret not in everything
        assert not [argv for argv in watch.seen if secret in argv]
        for path in glob.glob(os.path.join(bed["pgbr_dir"], "log", "*")) + [incr["log_file"]]:
            with open(path, encoding="utf-8", errors="replace") as handle:
                assert secret not in handle.read(), path


# --------------------------------------------------------------------------
# point-in-time recovery


def test_pitr_between_t1_and_t2_into_scratch(bed, base_backup, run_module):
    server: PgServer = bed["server"]
    table = f"pitr_scratch_{secrets.token_hex(3)}"
    times = write_rows(server, table)
    result = run_module("pg_pitr_restore", pitr_args(
        bed, target={"time": times["between"].isoformat()}, scratch={"keep": True}))
    scratch = result.get("scratch") or {}
    try:
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] and result["mode"] == "scratch"
        assert scratch["port"] != server.port and scratch["kept"]
        ids = [r[0] for r in scratch_query(scratch, f"SELECT id FROM {table} ORDER BY id")]
        assert ids == list(range(1, 11)), "exactly the rows of t1"
        point = dt.datetime.fromisoformat(result["recovery"]["recovery_point"].replace("Z", "+00:00"))
        assert times["t1"] <= point <= times["between"]
        assert result["recovery"]["in_recovery"] is False and result["recovery"]["timeline"] >= 2
        assert result["pitr"]["backup_set"]  # pgBackRest named the backup it used
        # archiving is off on the scratch copy: it never writes into the repository
        assert scratch_query(scratch, "SHOW archive_mode") == [("off",)]
        assert scratch_query(scratch, "SHOW listen_addresses") == [("",)]
    finally:
        if scratch.get("data_dir"):
            testbed.stop_cluster(server.bin_dir, scratch["data_dir"])
            shutil.rmtree(scratch["data_dir"], ignore_errors=True)
    # the live cluster still has both sets of rows
    assert server.query(f"SELECT count(*) FROM {table}") == [(20,)]


def test_target_outside_the_window_is_refused_untouched(bed, base_backup, run_module, tmp_path):
    server: PgServer = bed["server"]
    scratch_dir = str(tmp_path / "never")
    up_since = server.query("SELECT pg_postmaster_start_time()")[0][0]
    before = dt.datetime.fromisoformat(base_backup["started_at"].replace("Z", "+00:00")) - dt.timedelta(hours=1)
    early = run_module("pg_pitr_restore", pitr_args(
        bed, target={"time": before.isoformat()}, scratch={"dir": scratch_dir}))
    assert early["failed"]
    assert "outside the recoverable window" in early["msg"] and "before the oldest backup" in early["msg"]
    assert "Nothing was touched" in early["msg"]
    assert not os.path.exists(scratch_dir)
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    late = run_module("pg_pitr_restore", pitr_args(bed, target={"time": future}, into="live", confirm=STANZA))
    assert late["failed"] and "after the newest archived commit" in late["msg"], late["msg"]
    # live: a missing confirmation is refused before any work
    unconfirmed = run_module("pg_pitr_restore", pitr_args(bed, target={"end": True}, into="live"))
    assert unconfirmed["failed"] and f"confirm={STANZA}" in unconfirmed["msg"]
    # the live server never stopped
    assert server.query("SELECT pg_postmaster_start_time()")[0][0] == up_since


def test_pitr_drill_into_scratch_on_another_port(bed, base_backup, run_module, tmp_path):
    server: PgServer = bed["server"]
    reports, metrics = str(tmp_path / "reports"), str(tmp_path / "metrics")
    os.makedirs(metrics)
    server.query(f"CREATE TABLE drill_marker_{secrets.token_hex(3)} AS SELECT 1 AS x")
    bed["engine"].check()  # archived up to now, as archive_timeout keeps a busy cluster: the drill's RPO is small
    history_before = {k for k in s3_keys(bed, "pgbackrest/db1/archive/main/") if k.endswith(".history")}
    started = dt.datetime.now(dt.timezone.utc)
    result = run_module("pg_pitr_restore", pitr_args(bed, into="drill", drill={"report_dir": reports},
                                                     notification={"metrics_dir": metrics}))
    assert not result.get("failed"), result.get("msg")
    scratch = result["scratch"]
    assert scratch["port"] != server.port and not scratch["kept"]
    assert not os.path.exists(scratch["data_dir"]), "the drill removes its scratch cluster"
    point = dt.datetime.fromisoformat(result["recovery"]["recovery_point"].replace("Z", "+00:00"))
    assert point >= started - dt.timedelta(seconds=1), "the drill recovers to now (the sealed end of the window)"
    assert 0 < result["rto_s"] < 300 and 0 <= result["rpo_s"] <= 30
    # the RPO is the exposure measured before the drill sealed the window (test_pitr_drill_rpo.py: when it grows)
    assert result["rpo_s"] == result["exposure"]["seconds"] and result["exposure"]["newest_archived_commit"]
    assert result["recovery"]["databases"]["postgres"] >= 1
    with open(result["report_file"], encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["status"] == "success" and report["rto_s"] == result["rto_s"]
    assert (report["name"], report["source_type"], report["stanza"], report["kind"]) == (STANZA, "stanza", STANZA, "pitr")
    assert (result["name"], result["source_type"], result["stanza"]) == (STANZA, "stanza", STANZA)
    assert report == result["report"], "the drill role summarises the returned report"
    assert report["backup_id"] == result["pitr"]["backup_set"]
    assert report["recovery_point"] == result["recovery"]["recovery_point"]
    with open(os.path.join(metrics, "doctorq_drill_pgbackrest_main.prom"), encoding="utf-8") as handle:
        prom = handle.read()
    assert 'doctorq_drill_last_run_status{name="pgbackrest/main",database="pgbackrest/main"} 1' in prom and "doctorq_drill_rto_seconds" in prom
    # the drill's new timeline never reached the repository
    assert {k for k in s3_keys(bed, "pgbackrest/db1/archive/main/") if k.endswith(".history")} == history_before


def test_pitr_into_the_live_cluster(bed, base_backup, run_module):
    server: PgServer = bed["server"]
    table = f"pitr_live_{secrets.token_hex(3)}"
    times = write_rows(server, table)
    started_before = server.query("SELECT pg_postmaster_start_time()")[0][0]
    timeline_before = int(server.query("SELECT timeline_id FROM pg_control_checkpoint()")[0][0])
    result = run_module("pg_pitr_restore", pitr_args(
        bed, target={"time": times["between"].isoformat()}, into="live", confirm=STANZA))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] and result["mode"] == "live"
    assert result["safety_backup"], "a safety backup of the replaced state"
    assert server.query(f"SELECT id FROM {table} ORDER BY id") == [(i,) for i in range(1, 11)], "exactly the rows of t1"
    assert server.query("SELECT pg_postmaster_start_time()")[0][0] > started_before, "the server was restarted"
    assert result["recovery"]["timeline"] > timeline_before
    assert any("pgbackrest restore" in line and "--delta" in line for line in result["log"])
    # archiving goes on from the new timeline
    assert any("successfully archived" in line for line in bed["engine"].check())
    with open(os.path.join(bed["backup_dir"], "restore_audit.jsonl"), encoding="utf-8") as handle:
        audit = [json.loads(line) for line in handle]
    assert audit[-1]["mode"] == "pitr_live" and audit[-1]["status"] == "success"
    assert (audit[-1]["name"], audit[-1]["source_type"], audit[-1]["database"]) == (STANZA, "stanza", "pgbackrest/main")
    # The replaced state is not lost: the safety backup (on the abandoned timeline) restores it, on its own timeline;
    # it can no longer start a recovery along the new timeline, and nothing picks it for one.
    listing = run_module("backup_info", {"stanza": STANZA, "pgbackrest_config": bed["config"]})
    safety = next(b for b in listing["physical_backups"] if b["id"] == result["safety_backup"])
    assert safety["on_latest_timeline"] is False
    refused = run_module("pg_pitr_restore", pitr_args(bed, target={"end": True, "backup_set": safety["id"]}))
    assert refused["failed"] and "only target.immediate restores it" in refused["msg"]
    back = run_module("pg_pitr_restore", pitr_args(bed, target={"immediate": True, "backup_set": safety["id"]},
                                                   scratch={"keep": True}))
    scratch = back.get("scratch") or {}
    try:
        assert not back.get("failed"), back.get("msg")
        assert "recovery_target_timeline=current" in " ".join(back["log"])
        assert scratch_query(scratch, f"SELECT count(*) FROM {table}") == [(20,)], "the state before the recovery"
    finally:
        if scratch.get("data_dir"):
            testbed.stop_cluster(server.bin_dir, scratch["data_dir"])
            shutil.rmtree(scratch["data_dir"], ignore_errors=True)


def test_pitr_check_mode_plans_and_touches_nothing(bed, base_backup, run_module, tmp_path):
    listing = run_module("backup_info", {"stanza": STANZA, "pgbackrest_config": bed["config"]})
    start = dt.datetime.fromisoformat(listing["recoverable_window"]["start"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(listing["recoverable_window"]["end"].replace("Z", "+00:00"))
    target = start + (end - start) / 2
    scratch_dir = str(tmp_path / "scratch")
    audit = os.path.join(bed["backup_dir"], "restore_audit.jsonl")
    audit_before = os.path.getsize(audit) if os.path.exists(audit) else 0
    plan = run_module("pg_pitr_restore", pitr_args(bed, target={"time": target.isoformat()},
                                                   scratch={"dir": scratch_dir}), check_mode=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["changed"] and plan["plan"]["scratch_dir"] == scratch_dir
    assert "--type=time" in plan["plan"]["restore_options"] and "--archive-mode=off" in plan["plan"]["restore_options"]
    assert not os.path.exists(scratch_dir)
    live = run_module("pg_pitr_restore", pitr_args(bed, target={"end": True}, into="live"), check_mode=True)
    assert not live.get("failed"), live.get("msg")
    assert live["plan"]["confirmation_ok"] is False and "--delta" in live["plan"]["restore_options"]
    assert (os.path.getsize(audit) if os.path.exists(audit) else 0) == audit_before, "check mode writes no audit record"


def test_pitr_flat_spellings_of_before_still_work_and_are_deprecated(bed, base_backup, ansible_playbook, tmp_path):
    """Until 1.0.0 pg_pitr_restore's action plugin groups the flat options of before, with a deprecation warning."""
    scratch_dir = str(tmp_path / "scratch")
    plan, output = run_task(ansible_playbook, str(tmp_path / "flat"), "pg_pitr_restore", pg_module_args(
        bed, target="end", scratch_dir=scratch_dir, scratch_port=5999, keep_scratch=False), check=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["plan"]["target"] == "end" and plan["plan"]["scratch_dir"] == scratch_dir
    assert plan["plan"]["scratch_port"] == 5999 and plan["plan"]["keep_scratch"] is False
    assert not os.path.exists(scratch_dir)
    assert "[DEPRECATION WARNING]: pg_pitr_restore: old option spellings are read until 1.0.0" in output, output[-3000:]
    assert "target=end -> target.end=true" in output and "scratch_dir -> scratch.dir" in output
    assert "backup_dir" in output, "the run-log directory's old name is deprecated too (log_dir)"
    both = run_task(ansible_playbook, str(tmp_path / "both"), "pg_pitr_restore",
                    pitr_args(bed, drill=True, into="live"), check=True)[0]
    assert both["failed"] and "a PITR drill never touches the live cluster" in both["msg"]


def test_pg_restore_safe_pitr_options_still_work_and_are_deprecated(bed, base_backup, ansible_playbook, tmp_path):
    """Until 1.0.0 the pitr_* spellings of pg_restore_safe run the same recovery, with a deprecation warning.

    pg_restore_safe's action plugin hands the task to pg_pitr_restore (plugins/action/).
    """
    scratch_dir = str(tmp_path / "scratch")
    plan, output = run_task(ansible_playbook, str(tmp_path / "pitr"), "pg_restore_safe", pg_module_args(
        bed, pitr_target="end", pitr_scratch_dir=scratch_dir, pitr_timeout=600), check=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["plan"]["target"] == "end" and plan["plan"]["scratch_dir"] == scratch_dir
    assert not os.path.exists(scratch_dir)
    assert "[DEPRECATION WARNING]: pg_restore_safe with pitr_target is deprecated" in output, output[-3000:]
    assert "doctorq.backup.pg_pitr_restore" in output and "pitr_target -> target" in output
    assert "pitr_scratch_dir -> scratch_dir" in output and "version 1.0.0" in output


def test_pg_backup_physical_kinds_still_work_and_are_deprecated(bed, base_backup, ansible_playbook, tmp_path):
    """Until 1.0.0 pg_backup kind=<physical kind> takes the same backup as pgbackrest_backup, with a deprecation warning."""
    before = {b.id for b in bed["engine"].info().backups}
    result, output = run_task(ansible_playbook, str(tmp_path / "physical"), "pg_backup",
                              pg_module_args(bed, kind="incremental"))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] and result["backup"]["level"] == "incr" and result["backup"]["kind"] == "incremental"
    assert result["backup"]["id"] not in before
    assert result["backup"]["id"] in {b.id for b in bed["engine"].info().backups}
    assert "[DEPRECATION WARNING]: pg_backup with kind=incremental is deprecated" in output, output[-3000:]
    assert "doctorq.backup.pgbackrest_backup" in output and "version 1.0.0" in output
    # handed to pgbackrest_backup's action plugin, which reads its own kind of before as level
    assert "pgbackrest_backup: old option spellings" in output and "(kind -> level)" in output


def test_pgbackrest_backup_reads_kind_as_level_until_1_0_0(bed, base_backup, ansible_playbook, tmp_path):
    """A task of before (kind: differential) through the module's action plugin: level diff, with a deprecation."""
    plan, output = run_task(ansible_playbook, str(tmp_path / "kind"), "pgbackrest_backup",
                            backup_module_args(bed, kind="differential"), check=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["plan"]["requested_level"] == "diff" and plan["plan"]["kind"] == "differential"
    assert "[DEPRECATION WARNING]: pgbackrest_backup: old option spellings" in output, output[-3000:]
    assert "(kind -> level)" in output and "version 1.0.0" in output


def test_pitr_to_a_named_restore_point_into_scratch(bed, base_backup, run_module):
    server: PgServer = bed["server"]
    table = f"pitr_named_{secrets.token_hex(3)}"
    point = f"before_{table}"
    server.query(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    server.query(f"INSERT INTO {table} SELECT generate_series(1, 10)")
    server.query("SELECT pg_create_restore_point(%s)", (point,))
    server.query(f"INSERT INTO {table} SELECT generate_series(11, 20)")
    result = run_module("pg_pitr_restore", pitr_args(bed, target={"name": point}, scratch={"keep": True}))
    scratch = result.get("scratch") or {}
    try:
        assert not result.get("failed"), result.get("msg")
        assert any(f"--target={point}" in line for line in result["log"])
        assert scratch_query(scratch, f"SELECT count(*), max(id) FROM {table}") == [(10, 10)]
    finally:
        if scratch.get("data_dir"):
            testbed.stop_cluster(server.bin_dir, scratch["data_dir"])
            shutil.rmtree(scratch["data_dir"], ignore_errors=True)


def _cli(config: str, *args: str) -> subprocess.CompletedProcess:
    from conftest import COLLECTIONS_DIR  # pylint: disable=import-outside-toplevel

    return subprocess.run([sys.executable, "-m", "ansible_collections.doctorq.backup.cli.pgbackrest",
                           *args, "--config", config], env={**os.environ, "PYTHONPATH": COLLECTIONS_DIR},
                          capture_output=True, text=True, timeout=600, check=False)


def test_cron_entry_point_backs_up_and_refuses_a_readable_config(bed, base_backup, tmp_path):
    metrics = str(tmp_path / "metrics")
    os.makedirs(metrics)
    config = str(tmp_path / "pgbackrest.json")
    testbed._write_private(config, json.dumps({  # pylint: disable=protected-access
        "stanza": STANZA, "pgbackrest_config": bed["config"], "log_dir": str(tmp_path / "job"),
        "notification": {"metrics_dir": metrics}}))
    done = _cli(config, "backup", "--level", "incr")
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr
    assert glob.glob(str(tmp_path / "job" / "backup_pgbackrest-main_*.log")), "the run log in log_dir"
    assert any(LOG_LINE.match(line) and "INCR backup" in line and "finished" in line
               for line in done.stdout.splitlines()), done.stdout
    assert os.path.exists(os.path.join(metrics, "doctorq_backup_pgbackrest_main_incremental.prom"))
    # the drill role's weekly PITR drill: the connection in the same 0600 config, the drill's settings as flags
    # (with the run-log directory under its old name, backup_dir: still read, with a warning)
    testbed._write_private(config, json.dumps({  # pylint: disable=protected-access
        "stanza": STANZA, "pgbackrest_config": bed["config"], "backup_dir": str(tmp_path / "job"),
        "notification": {"metrics_dir": metrics}, "report_dir": str(tmp_path / "not-used"),
        **{k: v for k, v in pg_module_args(bed).items() if k.startswith("login_")}}))
    scratch = bed["server"].data_dir + "_cli_drill"  # where the database OS user can write
    drill = _cli(config, "drill", "--report-dir", str(tmp_path / "drills"), "--max-rpo-seconds", "600",
                 "--scratch-dir", scratch)
    assert drill.returncode == 0, drill.stderr + drill.stdout
    assert "backup_dir is deprecated and read until 1.0.0: name it log_dir" in drill.stderr
    assert "PITR drill of stanza main: success" in drill.stdout
    assert f"Scratch cluster stopped and removed ({scratch})" in drill.stdout
    with open(str(tmp_path / "drills" / "drill_pgbackrest-main.json"), encoding="utf-8") as handle:
        assert json.load(handle)["status"] == "success"
    assert not os.path.exists(tmp_path / "not-used"), "the flag overrides the config"
    os.chmod(config, 0o644)
    refused = _cli(config, "backup", "--level", "incr")
    assert refused.returncode == 2 and "readable by others" in refused.stderr


def test_a_failed_physical_backup_is_notified(bed, run_module, tmp_path):
    hook = Webhook()
    old_name = str(tmp_path / "old-name")
    args = {**backup_module_args(bed, level="incr", notification={"webhook_url": hook.url, "webhook_format": "json"},
                                 pgbackrest_config=str(tmp_path / "missing.conf")), "backup_dir": old_name}
    del args["log_dir"]
    try:
        result = run_module("pgbackrest_backup", args)
    finally:
        hook.close()
    assert result["failed"] and "pgbackrest" in result["msg"]
    assert [(e["status"], e["level"], e["kind"], e["id"]) for e in hook.events] == [("failure", "incr", "incremental", None)]
    assert hook.events[0]["error"] == result["msg"]
    # backup_dir, log_dir's old name: the run log and the lock go there, with a deprecation until 1.0.0
    assert [(d["version"], "backup_dir" in d["msg"]) for d in result.get("deprecations", [])] == [("1.0.0", True)]
    assert os.path.dirname(result["log_file"]) == old_name
    assert os.path.exists(os.path.join(old_name, ".pgbackrest-main.lock"))
