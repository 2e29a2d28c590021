"""pg_backup against the real PostgreSQL 15 and SeaweedFS of the test bed (issue 2, "Done when").

Round trip with stock tools, checksum files, manifest facts, S3 objects
(single PUT and multipart), weekly copies, retention on disk and in S3 with
fake clocks, check mode, every error case (nothing half-done), a run killed
mid-stream, two concurrent runs, webhook, metrics and secrets.

Where a run must be caught in the middle, ``GatedBin`` (tests/backup_support.py)
holds pg_dump's or pg_dumpall's output open until the test releases it, so
the state is known, not raced for.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import glob
import hashlib
import json
import math
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import threading
import time
import zlib
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import utcnow
from backup_support import (
    LOG_LINE, CliProcesses, GatedBin, Proxy, Webhook, assert_no_secret, b64_sha256, backup_files, closed_port,
    file_sha256, read_json, s3_body, s3_keys, s3_parts, s3_tags, s3_uploads, tmpfs, tree, wait_for, write_private,
)
from testbed import drop_database, empty_bucket

MiB = 1024 * 1024
DAY = dt.timedelta(days=1)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# ~23 MB of zstd output: 40,000 random rows, then 7 copies of them in order, each copy
# ~5 MB after the previous one, beyond the compressor's window, so it does not shrink.
BIG_SQL = """
CREATE TABLE public.blobs (id integer PRIMARY KEY, body text NOT NULL);
INSERT INTO public.blobs
SELECT i, md5(i::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
FROM generate_series(1, 40000) AS i;
INSERT INTO public.blobs
SELECT b.id + k * 40000, b.body
FROM generate_series(1, 7) AS k CROSS JOIN LATERAL (SELECT * FROM public.blobs WHERE id <= 40000 ORDER BY id) AS b;
ANALYZE public.blobs;
"""


# --------------------------------------------------------------------------
# helpers


def b64_crc32(data: bytes) -> str:
    """S3's form of a CRC32: base64 of the 4 big-endian bytes."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def job_params(pg_server, db: str, backup_dir, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": str(backup_dir), **extra}


def engine_run(params: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """The engine directly (what the module and the CLI call), with a clock of our choosing."""
    result = run_backup(BackupJob.from_params(params), now=now)
    assert not result.get("failed"), result.get("msg")
    return result


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def stock_restore(pg_server, archive: str, decompress: str, target: str) -> None:
    """`<decompress> FILE | pg_restore` into a new database, as README's one-liner does."""
    pg_server.query(f'CREATE DATABASE "{target}" TEMPLATE template0')
    script = f'set -o pipefail; {decompress} "$1" | "$2/pg_restore" --exit-on-error --no-owner --dbname="$3"'
    done = subprocess.run(["bash", "-c", script, "restore", archive, pg_server.bin_dir, target],
                          env={**os.environ, **pg_server.libpq_env()}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def s3_date(result: dict[str, Any]) -> str:
    return result["backup"]["started_at"][:10]


def triples(entries: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(e["id"], e["kind"], e["location"]) for e in entries}


def both(backup_id: str, kind: str) -> set[tuple[str, str, str]]:
    return {(backup_id, kind, "local"), (backup_id, kind, "s3")}


def listing(run_module, backup_dir, s3: dict[str, Any] | None, db: str, **extra: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {"backup_dir": str(backup_dir), "name": db, **extra}
    if s3:
        args["s3"] = s3
    return ok(run_module("backup_info", args))["backups"]


def run_log(backup_dir) -> str:
    logs = sorted(glob.glob(os.path.join(str(backup_dir), "backup_*.log")))
    assert logs, f"no run log in {backup_dir}"
    with open(logs[-1], encoding="utf-8") as handle:
        return handle.read()


def prom_samples(path: str) -> dict[str, float]:
    samples = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            match = re.fullmatch(r'(doctorq_backup_[a-z_]+)\{name="([^"]*)",database="\2"\} (\S+)', line.strip())
            assert match, f"not a Prometheus sample line: {line!r}"
            samples[match.group(1)] = float(match.group(3))
    return samples


def flip_byte(path: str, offset: int | None = None) -> None:
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = size // 2 if offset is None else offset
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def big_db(pg_server):
    """A database whose compressed dump is ~23 MB (several 5 MiB parts); built once per module."""
    name = f"t_big_{secrets.token_hex(4)}"
    pg_server.query(f'CREATE DATABASE "{name}" TEMPLATE template0')
    pg_server.query(BIG_SQL, dbname=name)
    yield name
    drop_database(pg_server, name)


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.close()


@pytest.fixture
def cli_procs(tmp_path):
    procs = CliProcesses(str(tmp_path))
    yield procs
    procs.close()


@pytest.fixture
def s3c(seaweed):
    return seaweed.client()


@pytest.fixture
def other_db(pg_server, pg_db):
    """A second (empty) database; its name holds pg_db's token, so pg_db's teardown drops it."""
    name = f"{pg_db}_other"
    pg_server.query(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return name


@pytest.fixture
def role(pg_server, pg_db):
    """A throwaway login role (name, password) of this test; dropped afterwards."""
    name = f"r_{secrets.token_hex(5)}"
    created = []

    def make(password: str, superuser: bool = False) -> str:
        pg_server.query(f'CREATE ROLE "{name}" LOGIN {"SUPERUSER" if superuser else ""} PASSWORD %s', (password,))
        created.append(name)
        return name

    yield make
    for rolename in created:
        pg_server.query(f'DROP OWNED BY "{rolename}"', dbname=pg_db)
        pg_server.query(f'DROP ROLE IF EXISTS "{rolename}"')


# --------------------------------------------------------------------------
# round trip, checksum files, manifest


@pytest.mark.parametrize("compression, level, ext, magic, decompress", [
    ("zstd", None, ".dump.zst", ZSTD_MAGIC, "zstd -dc"),
    ("gzip", 1, ".dump.gz", b"\x1f\x8b", "gzip -dc"),
    ("none", None, ".dump", b"PGDMP", "cat"),
])
def test_round_trip_with_stock_tools(pg_server, pg_db, table_digest, run_module, tmp_path,
                                     compression, level, ext, magic, decompress):
    before = table_digest(pg_server, pg_db)
    backup_dir = tmp_path / "backups"
    args = job_params(pg_server, pg_db, backup_dir, compression=compression)
    if level is not None:
        args["compression_level"] = level
    result = ok(run_module("pg_backup", args))

    assert result["changed"] is True
    path = result["backup"]["path"]
    name = os.path.basename(path)
    assert re.fullmatch(rf"{re.escape(pg_db)}_full_\d{{8}}_\d{{6}}{re.escape(ext)}", name)
    assert os.path.dirname(path) == str(backup_dir)
    with open(path, "rb") as handle:
        assert handle.read(len(magic)) == magic
    assert os.path.getsize(path) == result["backup"]["size"]
    assert file_sha256(path) == result["backup"]["sha256"]

    # the checksum files are what the stock tools accept, run where an operator would run them
    for tool, suffix in (("md5sum", ".md5"), ("sha256sum", ".sha256")):
        done = subprocess.run([tool, "-c", name + suffix], cwd=backup_dir, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{name}: OK"

    target = f"{pg_db}_restore"
    stock_restore(pg_server, path, decompress, target)
    assert table_digest(pg_server, target) == before


def test_manifest_facts_modes_and_run_log(pg_server, pg_db, table_digest, run_module, tmp_path, s3_bucket):
    backup_dir = tmp_path / "backups"
    t0 = utcnow()
    result = ok(run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3_bucket)))
    facts = result["backup"]
    path = facts["path"]
    manifest = read_json(path + ".manifest.json")

    version, version_num = pg_server.query(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int")[0]
    assert manifest["tool"] == "doctorq.backup" and manifest["manifest_version"] == 3 and manifest["tool_version"]
    assert manifest["name"] == pg_db and manifest["source_type"] == "database" and manifest["kind"] == "daily"
    assert manifest["id"] == facts["id"] == os.path.basename(path).split(".")[0]
    assert manifest["file"] == os.path.basename(path)
    assert manifest["server_version"] == version
    assert manifest["server_major"] == version_num // 10000 == 15
    assert manifest["pg_dump_version"] == 15
    assert manifest["host"] == socket.gethostname()
    assert manifest["format"] == "custom" and manifest["compression"] == "zstd" and manifest["compression_level"] == 3

    started = dt.datetime.strptime(manifest["started_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    finished = dt.datetime.strptime(manifest["finished_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert t0 <= started <= finished <= utcnow()
    assert 0 < manifest["duration_s"] <= (finished - started).total_seconds() + 1.5

    with open(path, "rb") as handle:
        data = handle.read()
    assert manifest["size"] == len(data) == facts["size"]
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == facts["sha256"]
    assert manifest["md5"] == hashlib.md5(data).hexdigest() == facts["md5"]  # nosec - what md5sum -c checks

    # tables with exact row counts (what the dump holds) and the planner's estimates
    digest = table_digest(pg_server, pg_db)
    assert manifest["table_count"] == len(digest) == 5 == facts["table_count"]
    assert {f"{t['schema']}.{t['name']}": t["rows"] for t in manifest["tables"]} == {k: v[0] for k, v in digest.items()}
    for table in manifest["tables"]:
        assert table["rows_estimate"] == table["rows"], table  # the sample is ANALYZEd
        assert table["bytes"] > 0

    # where the S3 copy is
    assert manifest["s3"]["bucket"] == s3_bucket["bucket"]
    assert manifest["s3"]["key"] == f"postgresql/{pg_db}/{manifest['started_at'][:10]}/{manifest['file']}"
    assert manifest["s3"]["uri"] == facts["s3_uri"] == f"s3://{s3_bucket['bucket']}/{manifest['s3']['key']}"
    assert manifest["s3"]["storage_class"] == "STANDARD" and manifest["s3"]["encryption"] == "AES256"

    # every file the run wrote is private to the backup user
    assert stat.S_IMODE(os.stat(backup_dir).st_mode) == 0o700
    files = tree(str(backup_dir))
    assert len(files) >= 6  # data, .md5, .sha256, manifest, run log, lock
    for rel, info in files.items():
        assert stat.S_IMODE(info.st_mode) == 0o600, f"{rel} is {stat.S_IMODE(info.st_mode):o}"

    # the run log: seed-style timestamped lines, the same ones the result returns
    assert result["log_file"].startswith(str(backup_dir) + "/backup_" + pg_db)
    with open(result["log_file"], encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines == result["log"]
    assert all(re.match(LOG_LINE, line) for line in lines)
    text = "\n".join(lines)
    for expected in (f"Starting FULL backup of database '{pg_db}'", f"File: {path}", "MD5 and SHA-256 checksum files written",
                     f"Uploaded to S3 and verified: {facts['s3_uri']}", "Backup completed successfully"):
        assert expected in text


def test_globals_file(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    result = ok(run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, globals=True)))
    name = result["backup"]["globals_file"]
    assert re.fullmatch(rf"{re.escape(pg_db)}_globals_\d{{8}}_\d{{6}}\.sql\.zst", name)
    path = os.path.join(backup_dir, name)
    with open(path, "rb") as handle:
        data = handle.read()
    manifest = read_json(result["backup"]["path"] + ".manifest.json")
    assert manifest["globals"] == {"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                   "md5": hashlib.md5(data).hexdigest()}  # nosec
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sql = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True, text=True).stdout
    assert "CREATE ROLE postgres;" in sql
    key = f"postgresql/{pg_db}/{s3_date(result)}/{name}"
    assert s3_body(s3c, s3_bucket["bucket"], key) == data
    assert s3_tags(s3c, s3_bucket["bucket"], key)["doctorq-backup-kind"] == "daily"


# --------------------------------------------------------------------------
# S3 objects


def test_s3_single_put_object(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    s3 = {**s3_bucket, "prefix": "doctorq/db1", "storage_class": "STANDARD_IA"}
    backup_dir = tmp_path / "backups"
    result = ok(run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3)))
    facts = result["backup"]
    bucket, name = s3["bucket"], os.path.basename(facts["path"])
    folder = f"doctorq/db1/{pg_db}/{s3_date(result)}"
    key = f"{folder}/{name}"
    set_files = (name, name + ".md5", name + ".sha256", name + ".manifest.json")
    assert s3_keys(s3c, bucket) == sorted(f"{folder}/{n}" for n in set_files)
    assert facts["s3_uri"] == f"s3://{bucket}/{key}"

    with open(facts["path"], "rb") as handle:
        local = handle.read()
    assert s3_body(s3c, bucket, key) == local
    head = s3c.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == facts["size"] < 5 * MiB
    assert head["ChecksumSHA256"] == b64_sha256(local)  # one PUT: the checksum of the whole object
    assert head["Metadata"]["sha256"] == facts["sha256"]
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert s3_tags(s3c, bucket, key) == {"doctorq-backup-kind": "daily", "doctorq-backup-part": "data"}

    # the checksum files and the manifest sit beside it; they stay STANDARD so listing never hits an archive tier
    for suffix in (".md5", ".sha256"):
        with open(facts["path"] + suffix, "rb") as handle:
            assert s3_body(s3c, bucket, key + suffix) == handle.read()
    remote_manifest = json.loads(s3_body(s3c, bucket, key + ".manifest.json"))
    assert remote_manifest["sha256"] == facts["sha256"] and remote_manifest["s3"]["key"] == key
    # where the object's checksums live: S3's own (the whole object's SHA-256) and the metadata
    checksum = {"algorithm": "SHA256", "type": "FULL_OBJECT", "value": b64_sha256(local)}
    assert remote_manifest["s3"]["checksum"] == facts["s3_checksum"] == checksum
    assert remote_manifest["s3"]["sha256_metadata"] is True
    for suffix in (".md5", ".sha256", ".manifest.json"):
        meta_head = s3c.head_object(Bucket=bucket, Key=key + suffix)
        assert meta_head.get("StorageClass", "STANDARD") == "STANDARD"
        assert meta_head["ServerSideEncryption"] == "AES256"
        assert s3_tags(s3c, bucket, key + suffix) == {"doctorq-backup-kind": "daily", "doctorq-backup-part": "meta"}
    assert s3_uploads(s3c, bucket) == []


@pytest.fixture(scope="module")
def multipart_run(pg_server, big_db, seaweed, tmp_path_factory):
    """One backup of big_db with 5 MiB parts and a weekly copy, shared by the multipart tests."""
    client = seaweed.client()
    bucket = f"t-multipart-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    backup_dir = tmp_path_factory.mktemp("multipart") / "backups"
    s3 = {**seaweed.s3_option(bucket), "part_size_mb": 5}
    result = engine_run(job_params(pg_server, big_db, backup_dir, s3=s3, weekly="always"))
    yield result, client, bucket
    empty_bucket(client, bucket)


def test_s3_multipart_upload(multipart_run):
    result, client, bucket = multipart_run
    facts = result["backup"]
    key = f"postgresql/{facts['database']}/{s3_date(result)}/{facts['file']}"
    part = 5 * MiB
    assert facts["size"] > 2 * part, "precondition: the dump needs several parts"
    with open(facts["path"], "rb") as handle:
        local = handle.read()

    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == facts["size"]
    parts = math.ceil(facts["size"] / part)
    assert client.head_object(Bucket=bucket, Key=key, PartNumber=1)["PartsCount"] == parts
    # one CRC32 of the whole object, which the server checked at completion (each part carried its own)
    assert head["ChecksumType"] == "FULL_OBJECT" and head["ChecksumCRC32"] == b64_crc32(local)
    assert head["ServerSideEncryption"] == "AES256"
    assert head.get("StorageClass", "STANDARD") == "STANDARD"
    assert s3_tags(client, bucket, key) == {"doctorq-backup-kind": "daily", "doctorq-backup-part": "data"}
    assert hashlib.sha256(s3_body(client, bucket, key)).hexdigest() == facts["sha256"]
    assert s3_uploads(client, bucket) == []


def test_s3_multipart_object_carries_a_full_object_crc32_and_its_sha256_sits_beside_it(multipart_run):
    """No sha256 metadata on a multipart object, by design (docs/DESIGN.md, "Checksums in S3").

    Metadata is fixed when the upload is created, before the SHA-256 is known,
    and S3 has no whole-object SHA-256 for multipart uploads; an in-place copy
    to add it would double the server's work and leave a second (on Object
    Lock buckets, locked) version of every backup. So the object carries a
    whole-object CRC32 the server verified, and the SHA-256 is in the .sha256
    object and the manifest beside it, which say so.
    """
    result, client, bucket = multipart_run
    facts = result["backup"]
    key = f"postgresql/{facts['database']}/{s3_date(result)}/{facts['file']}"
    body = s3_body(client, bucket, key)
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT" and head["ChecksumCRC32"] == b64_crc32(body)
    assert "sha256" not in head["Metadata"] and head["Metadata"]["backup-id"] == facts["id"]
    manifest = json.loads(s3_body(client, bucket, key + ".manifest.json"))
    assert manifest["s3"]["checksum"] == facts["s3_checksum"] == {
        "algorithm": "CRC32", "type": "FULL_OBJECT", "value": b64_crc32(body)}
    assert manifest["s3"]["sha256_metadata"] is False
    assert manifest["sha256"] == facts["sha256"] == hashlib.sha256(body).hexdigest()
    assert s3_body(client, bucket, key + ".sha256").decode() == f"{facts['sha256']}  {facts['file']}\n"


def test_weekly_copy_of_a_multipart_object(multipart_run):
    result, client, bucket = multipart_run
    facts = result["backup"]
    key = f"postgresql/weekly/{facts['database']}/{s3_date(result)}/{facts['file']}"
    assert facts["weekly_s3_uri"] == f"s3://{bucket}/{key}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == facts["size"]
    assert hashlib.sha256(s3_body(client, bucket, key)).hexdigest() == facts["sha256"]
    assert s3_tags(client, bucket, key)["doctorq-backup-kind"] == "weekly"
    assert head["ServerSideEncryption"] == "AES256"


# --------------------------------------------------------------------------
# weekly copies


def test_weekly_copy_on_disk_and_in_s3(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    args = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, weekly="always", globals=True)
    result = ok(run_module("pg_backup", args))
    facts = result["backup"]
    assert facts["weekly"] is True
    manifest = read_json(facts["path"] + ".manifest.json")
    names = [manifest["file"], manifest["file"] + ".md5", manifest["file"] + ".sha256", manifest["globals"]["file"]]
    weekly_dir = backup_dir / "weekly"
    assert facts["weekly_path"] == str(weekly_dir / manifest["file"])
    for name in names:  # hard links: the same inode, no extra space
        daily, weekly = os.stat(backup_dir / name), os.stat(weekly_dir / name)
        assert (daily.st_ino, daily.st_dev) == (weekly.st_ino, weekly.st_dev), name
        assert daily.st_nlink == 2
    weekly_manifest = read_json(str(weekly_dir / (manifest["file"] + ".manifest.json")))
    assert weekly_manifest["kind"] == "weekly"
    assert {k: v for k, v in weekly_manifest.items() if k not in ("kind", "s3")} == \
        {k: v for k, v in manifest.items() if k not in ("kind", "s3")}

    bucket, date = s3_bucket["bucket"], s3_date(result)
    daily_folder, weekly_folder = f"postgresql/{pg_db}/{date}", f"postgresql/weekly/{pg_db}/{date}"
    assert weekly_manifest["s3"]["key"] == f"{weekly_folder}/{manifest['file']}"
    assert facts["weekly_s3_uri"] == f"s3://{bucket}/{weekly_folder}/{manifest['file']}"
    assert s3_keys(s3c, bucket, weekly_folder + "/") == sorted(
        f"{weekly_folder}/{n}" for n in names + [manifest["file"] + ".manifest.json"])
    for name in names:
        assert s3_body(s3c, bucket, f"{weekly_folder}/{name}") == s3_body(s3c, bucket, f"{daily_folder}/{name}")
        assert s3_tags(s3c, bucket, f"{weekly_folder}/{name}")["doctorq-backup-kind"] == "weekly"
        assert s3_tags(s3c, bucket, f"{daily_folder}/{name}")["doctorq-backup-kind"] == "daily"

    entries = listing(run_module, backup_dir, s3_bucket, pg_db)
    assert triples(entries) == both(facts["id"], "daily") | both(facts["id"], "weekly")


def test_weekly_auto_follows_the_weekday(pg_server, pg_db, tmp_path):
    # noon UTC, so the host's local date is the same day in any time zone within +-11 h
    today = utcnow().replace(hour=12, minute=0, second=0)
    sunday = today - dt.timedelta(days=(today.astimezone().weekday() - 6) % 7)
    assert sunday.astimezone().strftime("%A") == "Sunday"
    params = job_params(pg_server, pg_db, tmp_path / "backups", prune=False)  # weekly: auto, weekly_day: sunday
    on_sunday = engine_run(params, now=sunday)
    on_monday = engine_run(params, now=sunday + DAY)
    monday_rule = engine_run({**params, "weekly_day": "monday"}, now=sunday + DAY + dt.timedelta(hours=1))
    assert (on_sunday["backup"]["weekly"], on_monday["backup"]["weekly"], monday_rule["backup"]["weekly"]) == \
        (True, False, True)
    weekly = sorted(n for n in os.listdir(tmp_path / "backups" / "weekly") if n.endswith(".manifest.json"))
    assert weekly == sorted(r["backup"]["file"] + ".manifest.json" for r in (on_sunday, monday_rule))


# --------------------------------------------------------------------------
# retention


def test_retention_by_kind_on_disk_and_in_s3(pg_server, pg_db, other_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    bucket = s3_bucket["bucket"]
    now = utcnow()
    base = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, prune=False,
                      retention_daily_days=30, retention_weekly_days=365, retention_min_count=1)
    ids = {}
    for label, days, weekly in (("A", 400, "always"), ("B", 200, "always"), ("C", 40, "never"), ("D", 10, "never")):
        ids[label] = engine_run({**base, "weekly": weekly}, now=now - days * DAY)["backup"]["id"]
    other = engine_run({**base, "db": other_db, "weekly": "always"}, now=now - 400 * DAY)["backup"]["id"]

    # things retention must never touch: old files without a manifest of this tool, beside ours
    # (names this tool does not write: the seed scripts' naming has its own test below)
    foreign_local = ["notes.txt", f"{pg_db}_full_20200101_020000.txt", "weekly/README",
                     f"weekly/{pg_db}_export_20200101_020000.dump.zst"]
    for rel in foreign_local:
        write_private(str(backup_dir / rel), "not ours\n")
        os.utime(backup_dir / rel, (0, 0))
    foreign_keys = [f"postgresql/{pg_db}/2020-01-01/notes.txt",
                    f"postgresql/{pg_db}/2020-01-01/{pg_db}_export_20200101_020000.dump.zst",
                    f"postgresql/weekly/{pg_db}/2020-01-01/README"]
    for key in foreign_keys:
        s3c.put_object(Bucket=bucket, Key=key, Body=b"not ours\n")

    final = ok(run_module("pg_backup", {**base, "prune": True, "weekly": "never"}))
    new = final["backup"]["id"]
    expected_gone = both(ids["A"], "daily") | both(ids["B"], "daily") | both(ids["C"], "daily") | \
        both(ids["A"], "weekly")
    assert triples(final["deleted"]) == expected_gone
    assert triples(listing(run_module, backup_dir, s3_bucket, pg_db)) == \
        both(ids["D"], "daily") | both(new, "daily") | both(ids["B"], "weekly")

    # the files went with their manifests, on disk and in S3
    local_names = backup_files(str(backup_dir))
    keys = s3_keys(s3c, bucket)
    for gone in (ids["A"], ids["C"]):
        assert not [n for n in local_names if gone in n]
        assert not [k for k in keys if gone in k]
    b_files = [n for n in local_names if ids["B"] in n]
    assert b_files and all(n.startswith("weekly/") for n in b_files)
    assert os.stat(backup_dir / "weekly" / f"{ids['B']}.dump.zst").st_nlink == 1  # the daily link went, the bytes stay
    b_keys = [k for k in keys if ids["B"] in k]
    assert b_keys and all(k.startswith("postgresql/weekly/") for k in b_keys)

    # untouched: foreign files and another database's old backups
    for rel in foreign_local:
        assert (backup_dir / rel).read_text() == "not ours\n", rel
    for key in foreign_keys:
        assert key in keys, key
    assert triples(listing(run_module, backup_dir, s3_bucket, other_db)) == both(other, "daily") | both(other, "weekly")

    # run logs go with the longest-kept backups (365 days), per database
    def run_log(db, backup_id):
        return backup_dir / f"backup_{db}_{'_'.join(backup_id.rsplit('_', 2)[-2:])}.log"
    assert not run_log(pg_db, ids["A"]).exists()
    assert all(run_log(pg_db, ids[label]).exists() for label in "BCD")
    assert run_log(pg_db, new).exists() and run_log(other_db, other).exists()


def test_retention_keeps_the_newest_of_each_kind_and_check_mode_deletes_nothing(
        pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    now = utcnow()
    base = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, prune=False, weekly="always",
                      retention_daily_days=30, retention_weekly_days=30, retention_min_count=1)
    oldest = engine_run(base, now=now - 100 * DAY)["backup"]["id"]
    newest = engine_run(base, now=now - 90 * DAY)["backup"]["id"]
    before_files = {k: (v.st_ino, v.st_size, v.st_mtime_ns) for k, v in tree(str(backup_dir)).items()}
    before_keys = s3_keys(s3c, s3_bucket["bucket"])

    plan = ok(run_module("pg_backup", {**base, "prune": True, "weekly": "never"}, check_mode=True))
    # both are older than 30 days; the newer one is the newest weekly and stays; the run's own backup (counted in
    # the plan) becomes the newest daily
    assert triples(plan["plan"]["would_delete"]) == both(oldest, "daily") | both(oldest, "weekly") | both(newest, "daily")
    assert any(f"Would delete daily backup {oldest}" in line for line in plan["log"])
    assert {k: (v.st_ino, v.st_size, v.st_mtime_ns) for k, v in tree(str(backup_dir)).items()} == before_files
    assert s3_keys(s3c, s3_bucket["bucket"]) == before_keys

    # a real run makes a fresh daily (now the newest daily); the 90-day weekly is still the newest weekly
    real = ok(run_module("pg_backup", {**base, "prune": True, "weekly": "never"}))
    assert triples(real["deleted"]) == triples(plan["plan"]["would_delete"])
    assert triples(listing(run_module, backup_dir, s3_bucket, pg_db)) == \
        both(real["backup"]["id"], "daily") | both(newest, "weekly")


def test_files_of_the_seed_scripts_are_never_removed(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    """Users migrate from the seed's scripts: their <db>_full_<stamp>.sql.gz backups are not crash leftovers."""
    backup_dir = tmp_path / "backups"
    seed_files = [f"{pg_db}_full_20251107_020000.sql.gz", f"{pg_db}_full_20251107_020000.sql.gz.md5",
                  f"weekly/{pg_db}_full_20251102_020000.sql.gz"]
    for rel in seed_files:
        os.makedirs(os.path.dirname(backup_dir / rel), exist_ok=True)
        write_private(str(backup_dir / rel), "seed backup\n")
    seed_key = f"postgresql/{pg_db}/2025-11-07/{pg_db}_full_20251107_020000.sql.gz"
    s3c.put_object(Bucket=s3_bucket["bucket"], Key=seed_key, Body=b"seed backup\n")

    result = ok(run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3_bucket)))
    assert result["leftovers_removed"] == []
    for rel in seed_files:
        assert (backup_dir / rel).exists(), rel
    assert seed_key in s3_keys(s3c, s3_bucket["bucket"])


# --------------------------------------------------------------------------
# check mode


def test_check_mode_touches_nothing(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "not-yet"
    args = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, weekly="always", globals=True)
    result = ok(run_module("pg_backup", args, check_mode=True))
    assert result["changed"] is True
    plan = result["plan"]
    match = re.fullmatch(rf"{re.escape(str(backup_dir))}/{re.escape(pg_db)}_full_(\d{{8}})_\d{{6}}\.dump\.zst",
                         plan["path"])
    assert match, plan["path"]
    date = dt.datetime.strptime(match.group(1), "%Y%m%d").strftime("%Y-%m-%d")
    assert plan["s3_uri"] == f"s3://{s3_bucket['bucket']}/postgresql/{pg_db}/{date}/{os.path.basename(plan['path'])}"
    assert plan["name"] == pg_db and plan["weekly"] is True
    assert plan["would_delete"] == [] and plan["leftovers"] == []
    assert any("check mode" in line for line in result["log"])
    assert not backup_dir.exists()
    assert s3_keys(s3c, s3_bucket["bucket"]) == [] and s3_uploads(s3c, s3_bucket["bucket"]) == []


# --------------------------------------------------------------------------
# errors: clear message, nothing half-done


def assert_nothing_written(backup_dir, s3c=None, bucket: str | None = None) -> None:
    if os.path.isdir(backup_dir):
        assert backup_files(str(backup_dir)) == []
    if s3c is not None:
        assert s3_keys(s3c, bucket) == []
        assert s3_uploads(s3c, bucket) == []


@pytest.mark.parametrize("case", ["missing", "older_than_server"])
@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_pg_dump_missing_or_too_old(case, check_mode, pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    bin_dir = tmp_path / "pgbin"
    bin_dir.mkdir()
    if case == "older_than_server":
        (bin_dir / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.9'\n")
        (bin_dir / "pg_dump").chmod(0o755)
    backup_dir = tmp_path / "backups"
    result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, pg_bin_dir=str(bin_dir)),
                        check_mode=check_mode)
    assert result["failed"]
    if case == "missing":
        assert f"pg_dump not found in pg_bin_dir {bin_dir}" in result["msg"]
    else:
        assert "pg_dump is older than the server" in result["msg"] and f"{bin_dir}/pg_dump (14)" in result["msg"]
    assert "postgresql-client-15" in result["msg"]
    assert_nothing_written(backup_dir, s3c, s3_bucket["bucket"])


def test_authentication_failure_never_shows_the_password(pg_server, pg_db, run_module, tmp_path):
    wrong = "Wr0ng-" + secrets.token_urlsafe(16)
    backup_dir = tmp_path / "backups"
    args = job_params(pg_server, pg_db, backup_dir, login_password=wrong)
    result = run_module("pg_backup", args)
    assert result["failed"]
    assert "authentication failed" in result["msg"] and "login_password" in result["msg"]
    assert wrong not in json.dumps(result)
    log = run_log(backup_dir)
    assert "ERROR: authentication failed" in log and wrong not in log
    assert_nothing_written(backup_dir)
    # the engine's own result (what the CLI and the webhook see) does not carry it either
    engine = run_backup(BackupJob.from_params({**args, "backup_dir": str(tmp_path / "engine")}))
    assert engine["failed"] and wrong not in json.dumps(engine)


def test_password_with_special_characters(pg_server, pg_db, role, table_digest, run_module, tmp_path):
    """The passfile escapes ':' and '\\'; a password is never mangled on its way to pg_dump."""
    password = "p:a\\ss w:rd'\"#" + secrets.token_hex(4)
    name = role(password, superuser=True)
    backup_dir = tmp_path / "backups"
    args = job_params(pg_server, pg_db, backup_dir, login_user=name, login_password=password, globals=True)
    result = ok(run_module("pg_backup", args))
    stock_restore(pg_server, result["backup"]["path"], "zstd -dc", f"{pg_db}_restore")
    assert table_digest(pg_server, f"{pg_db}_restore") == table_digest(pg_server, pg_db)
    assert password not in run_log(backup_dir)


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_database_missing(check_mode, pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    missing = f"{pg_db}_nope"
    result = run_module("pg_backup", job_params(pg_server, missing, backup_dir, s3=s3_bucket), check_mode=check_mode)
    assert result["failed"]
    assert f"database '{missing}' does not exist" in result["msg"]
    assert_nothing_written(backup_dir, s3c, s3_bucket["bucket"])


def test_missing_privileges(pg_server, pg_db, role, run_module, tmp_path, s3_bucket, s3c):
    password = secrets.token_urlsafe(12)
    name = role(password)
    pg_server.query(f'GRANT USAGE ON SCHEMA billing TO "{name}"; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{name}"',
                    dbname=pg_db)  # not billing.invoices
    backup_dir = tmp_path / "backups"
    result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, login_user=name,
                                                login_password=password))
    assert result["failed"]
    assert "permission denied" in result["msg"] and "invoices" in result["msg"]
    assert_nothing_written(backup_dir, s3c, s3_bucket["bucket"])


@pytest.mark.parametrize("how", ["under_a_regular_file", "read_only_mount"])
def test_backup_dir_not_writable(how, pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c, webhook):
    with contextlib.ExitStack() as stack:
        if how == "under_a_regular_file":
            (tmp_path / "file").write_text("x")
            backup_dir = str(tmp_path / "file" / "backups")
            reason = "Not a directory"
        else:  # root may write anywhere mode bits forbid it; a read-only mount stops root too
            backup_dir = stack.enter_context(tmpfs(str(tmp_path / "ro"), "1m", read_only=True))
            reason = "is not writable"
        result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3_bucket,
                                                    notification={"webhook_url": webhook.url()}))
        assert result["failed"]
        assert f"backup directory {backup_dir}" in result["msg"] and reason in result["msg"]
        if os.path.isdir(backup_dir):
            assert os.listdir(backup_dir) == []
    assert_nothing_written(tmp_path / "nowhere", s3c, s3_bucket["bucket"])
    # a failure is notified like any other
    assert [body["text"] for _path, body in webhook.received if "FAILED" in body["text"] and reason in body["text"]]


def test_log_dir_missing_is_a_clear_failure(pg_server, pg_db, run_module, tmp_path):
    log_dir = tmp_path / "no" / "such" / "dir"
    result = run_module("pg_backup", job_params(pg_server, pg_db, tmp_path / "backups", log_dir=str(log_dir)))
    assert result["failed"]
    assert str(log_dir) in result["msg"]
    assert_nothing_written(tmp_path / "backups")


def test_disk_full_leaves_nothing(pg_server, big_db, run_module, tmp_path, s3_bucket, s3c):
    # 8 MiB: more than one 5 MiB part is streamed (a multipart upload starts), far less than the ~23 MB dump
    s3 = {**s3_bucket, "part_size_mb": 5}
    with tmpfs(str(tmp_path / "small"), "8m") as backup_dir:
        result = run_module("pg_backup", job_params(pg_server, big_db, backup_dir, s3=s3))
        assert result["failed"]
        assert "No space left on device" in result["msg"] and "free space" in result["msg"]
        assert backup_files(backup_dir) == []  # no partial file, no complete-looking set
        assert "ERROR: writing" in run_log(backup_dir)
        assert listing(run_module, backup_dir, s3, big_db) == []
    assert_nothing_written(tmp_path / "nowhere", s3c, s3_bucket["bucket"])


def test_disk_already_full_when_the_run_starts(pg_server, pg_db, run_module, tmp_path, webhook):
    """The usual way a disk is full: before the run, from earlier backups. A clear failure, not a traceback."""
    with tmpfs(str(tmp_path / "full"), "1m") as backup_dir:
        subprocess.run(["dd", "if=/dev/zero", f"of={backup_dir}/filler", "bs=64k"], capture_output=True, check=False)
        result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, notification={"webhook_url": webhook.url()}))
        assert result["failed"]
        assert "No space left on device" in result["msg"] and "free space" in result["msg"]
        assert backup_files(backup_dir) == ["filler"]
    assert any("FAILED" in body["text"] and "No space left" in body["text"] for _path, body in webhook.received)


def test_pg_dump_failing_mid_stream_leaves_nothing(pg_server, big_db, run_module, tmp_path, s3_bucket, s3c):
    """pg_dump streams everything, then exits non-zero (a lost connection): nothing may look complete."""
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir)
    wrapper = os.path.join(gate.dir, "pg_dump")
    with open(wrapper, encoding="utf-8") as handle:
        script = handle.read()
    with open(wrapper, "w", encoding="utf-8") as handle:
        handle.write(script.replace("exit $rc", "echo 'pg_dump: error: connection to server lost (simulated)' >&2\nexit 1"))
    backup_dir = tmp_path / "backups"
    s3 = {**s3_bucket, "part_size_mb": 5}
    result = run_module("pg_backup", job_params(pg_server, big_db, backup_dir, s3=s3, pg_bin_dir=gate.dir))
    assert result["failed"]
    assert "pg_dump exited with status 1" in result["msg"] and "connection to server lost" in result["msg"]
    assert gate.dumped("pg_dump")
    assert backup_files(str(backup_dir)) == []
    assert_nothing_written(tmp_path / "nowhere", s3c, s3_bucket["bucket"])


def test_s3_wrong_credentials(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    wrong = secrets.token_urlsafe(30)
    backup_dir = tmp_path / "backups"
    args = job_params(pg_server, pg_db, backup_dir, s3={**s3_bucket, "secret_key": wrong})
    result = run_module("pg_backup", args)
    assert result["failed"]
    assert "S3 access check" in result["msg"] and "s3.secret_key" in result["msg"]
    assert f"The local backup {result['backup']['path']} is complete and kept" in result["msg"]
    assert wrong not in json.dumps(result) and wrong not in run_log(backup_dir)
    # tonight's backup is on disk, complete; nothing was written to S3
    assert [b["location"] for b in listing(run_module, backup_dir, None, pg_db)] == ["local"]
    assert_nothing_written(tmp_path / "nowhere", s3c, s3_bucket["bucket"])
    engine = run_backup(BackupJob.from_params({**args, "backup_dir": str(tmp_path / "engine")}))
    assert engine["failed"] and wrong not in json.dumps(engine)


def test_s3_bucket_missing(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    missing = s3_bucket["bucket"] + "-missing"
    result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3={**s3_bucket, "bucket": missing}))
    assert result["failed"]
    assert f"s3://{missing}" in result["msg"] and "does not exist" in result["msg"]
    assert f"The local backup {result['backup']['path']} is complete and kept" in result["msg"]
    assert [b["location"] for b in listing(run_module, backup_dir, None, pg_db)] == ["local"]
    assert missing not in [b["Name"] for b in s3c.list_buckets()["Buckets"]]


def test_s3_endpoint_unreachable_fails_clearly(pg_server, pg_db, run_module, tmp_path):
    backup_dir = tmp_path / "backups"
    s3 = {"bucket": "anything", "endpoint_url": f"http://127.0.0.1:{closed_port()}", "access_key": "AK",
          "secret_key": "SK-" + secrets.token_hex(8), "max_attempts": 1}
    started = time.monotonic()
    result = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, s3=s3))
    assert result["failed"]
    assert "cannot be reached" in result["msg"] and "s3.endpoint_url" in result["msg"]
    assert time.monotonic() - started < 30
    assert s3["secret_key"] not in json.dumps(result)


def test_s3_endpoint_down_at_start_still_keeps_a_local_backup(pg_server, pg_db, run_module, tmp_path, webhook):
    backup_dir = tmp_path / "backups"
    s3 = {"bucket": "anything", "endpoint_url": f"http://127.0.0.1:{closed_port()}", "access_key": "AK",
          "secret_key": "SK-" + secrets.token_hex(8), "max_attempts": 1}
    params = job_params(pg_server, pg_db, backup_dir, s3=s3, weekly="always", globals=True,
                        notification={"webhook_url": webhook.url("/json"), "webhook_format": "json"})

    # check mode checks access: S3 down fails it, clearly, and says what a real run would do
    plan = run_module("pg_backup", params, check_mode=True)
    assert plan["failed"] and "cannot be reached" in plan["msg"]
    assert "A real run would still write the local backup" in plan["msg"]
    assert_nothing_written(backup_dir)

    result = run_module("pg_backup", params)
    assert result["failed"]
    facts, msg = result["backup"], result["msg"]
    path = facts["path"]
    # the message names the S3 problem, where the backup is, and what the user must do
    assert msg.startswith("S3 access check (HEAD bucket) failed for s3://anything") and "cannot be reached" in msg
    assert f"The local backup {path} is complete and kept" in msg and "s3://anything" in msg
    assert "catches up this one too" in msg  # even on the first run: S3 need not hold an earlier backup
    assert s3["secret_key"] not in json.dumps(result)
    # the local set is complete: listed (daily and weekly), checksums pass, no S3 location claimed
    entries = listing(run_module, backup_dir, None, pg_db, verify=True)
    assert sorted((e["kind"], e["location"], e["verification"]["state"]) for e in entries) == [
        ("daily", "local", "verified"), ("weekly", "local", "verified")]
    for tool in ("md5sum", "sha256sum"):
        done = subprocess.run([tool, "-c", facts["file"] + "." + tool[:-3]], cwd=backup_dir, capture_output=True, check=False)
        assert done.returncode == 0
    manifest = read_json(path + ".manifest.json")
    assert manifest["s3"] is None and manifest["globals"]["file"]
    assert facts["weekly"] is True and facts["weekly_s3_uri"] is None
    log = run_log(backup_dir)
    assert "Going on without S3" in log and "Applying retention" in log and "Backup completed successfully" not in log
    # the webhook says the same: failed, why, and the local backup's facts
    [(_path, event)] = [(p, b) for p, b in webhook.received if p == "/json"]
    assert event["status"] == "failure" and event["error"] == msg and "cannot be reached" in event["s3_error"]
    assert event["backup"]["path"] == path and event["backup"]["s3_uri"] is None


def test_local_retention_still_runs_while_s3_is_down(pg_server, pg_db, tmp_path):
    backup_dir = tmp_path / "backups"
    now = utcnow()
    old = engine_run(job_params(pg_server, pg_db, backup_dir, weekly="never", retention_min_count=1), now=now - 40 * DAY)
    s3 = {"bucket": "anything", "endpoint_url": f"http://127.0.0.1:{closed_port()}", "access_key": "AK",
          "secret_key": "SK", "max_attempts": 1}
    result = run_backup(BackupJob.from_params(job_params(pg_server, pg_db, backup_dir, s3=s3, weekly="never",
                                                         retention_min_count=1)), now=now)
    assert result["failed"] and "is complete and kept" in result["msg"]
    # the 40-day-old daily went (past the 30-day window, and no longer the newest); tonight's stays
    assert result["deleted"] == [{"id": old["backup"]["id"], "kind": "daily", "location": "local",
                                  "origin": old["backup"]["path"] + ".manifest.json"}]
    assert [m for m in os.listdir(backup_dir) if m.endswith(".manifest.json")] == [result["backup"]["file"] + ".manifest.json"]


def test_next_run_catches_up_what_s3_missed(pg_server, pg_db, run_module, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    now = utcnow()
    up = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, weekly="always")
    down = job_params(pg_server, pg_db, backup_dir, weekly="always",
                      s3={**s3_bucket, "endpoint_url": f"http://127.0.0.1:{closed_port()}", "max_attempts": 1})
    first = engine_run(up, now=now - 2 * DAY)
    missed = run_backup(BackupJob.from_params(down), now=now - DAY)
    assert missed["failed"]
    # an earlier backup is in S3, so the message can promise the catch-up
    assert "catches up this one too" in missed["msg"] and "uploads only its own" not in missed["msg"]
    missed_id = missed["backup"]["id"]

    plan = ok(run_module("pg_backup", up, check_mode=True))
    assert plan["plan"]["would_upload"] == [missed_id]

    third = engine_run(up, now=now)
    [entry] = third["caught_up"]
    bucket, name = s3_bucket["bucket"], missed["backup"]["file"]
    key = f"postgresql/{pg_db}/{missed['backup']['started_at'][:10]}/{name}"
    assert entry["id"] == missed_id and entry["s3_uri"] == f"s3://{bucket}/{key}"
    assert entry["weekly_s3_uri"] == f"s3://{bucket}/postgresql/weekly/{pg_db}/{missed['backup']['started_at'][:10]}/{name}"
    with open(missed["backup"]["path"], "rb") as handle:
        assert s3_body(s3c, bucket, key) == handle.read()
    assert s3_body(s3c, bucket, key + ".sha256").decode().split()[0] == missed["backup"]["sha256"]
    # the local manifests (daily and weekly) now say where the S3 copies are
    assert read_json(missed["backup"]["path"] + ".manifest.json")["s3"]["key"] == key
    assert read_json(str(backup_dir / "weekly" / (name + ".manifest.json")))["s3"]["uri"] == entry["weekly_s3_uri"]
    # every run's backup is now complete in both places, daily and weekly
    entries = listing(run_module, backup_dir, s3_bucket, pg_db)
    ids = (first["backup"]["id"], missed_id, third["backup"]["id"])
    assert triples(entries) == set().union(*(both(i, k) for i in ids for k in ("daily", "weekly")))
    # and nothing is caught up twice
    assert "caught_up" not in engine_run(up, now=now + dt.timedelta(seconds=5))


def test_s3_endpoint_lost_mid_upload_keeps_the_local_backup(pg_server, big_db, run_module, tmp_path, seaweed,
                                                            s3_bucket, s3c):
    bucket = s3_bucket["bucket"]
    proxy = Proxy(seaweed.endpoint_url)
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir, hold=("pg_dump",))
    backup_dir = tmp_path / "backups"
    params = job_params(pg_server, big_db, backup_dir, pg_bin_dir=gate.dir,
                        s3={**s3_bucket, "endpoint_url": proxy.url, "part_size_mb": 5, "max_attempts": 1})
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(run_backup(BackupJob.from_params(params))), daemon=True)
    worker.start()
    try:
        wait_for(lambda: gate.dumped("pg_dump"), what="pg_dump to finish streaming")
        upload = wait_for(lambda: [u for u in s3_uploads(s3c, bucket) if s3_parts(s3c, bucket, u)],
                          what="a part of the upload to reach S3")[0]
        proxy.cut()
    finally:
        gate.release()
        worker.join(120)
    assert not worker.is_alive()

    assert outcome["failed"]
    msg = outcome["msg"]
    assert "cannot be reached" in msg and "is complete and kept" in msg
    # the local copy is complete: listed, checksums pass, no S3 location claimed
    entries = listing(run_module, backup_dir, None, big_db, verify=True)
    assert [(e["location"], e["verification"]["state"]) for e in entries] == [("local", "verified")]
    name = entries[0]["file"]
    done = subprocess.run(["sha256sum", "-c", name + ".sha256"], cwd=backup_dir, capture_output=True, check=False)
    assert done.returncode == 0
    assert read_json(str(backup_dir / (name + ".manifest.json")))["s3"] is None
    # nothing in S3 looks complete; the upload that could not be aborted (no endpoint) is not claimed gone
    assert [k for k in s3_keys(s3c, bucket) if k.endswith(".manifest.json")] == []
    left = s3_uploads(s3c, bucket)
    assert [u["UploadId"] for u in left] == [upload["UploadId"]]
    assert "no parts left behind" not in msg
    # the facts of the local backup are returned with the failure
    assert outcome.get("changed") is True
    assert outcome.get("backup", {}).get("path") == str(backup_dir / name)

    # the next run, with the endpoint back, removes the unfinished upload
    params["s3"] = {**s3_bucket, "part_size_mb": 5}
    params["pg_bin_dir"] = None
    again = ok(run_module("pg_backup", params))
    assert any("(unfinished upload)" in item for item in again["leftovers_removed"])
    assert s3_uploads(s3c, bucket) == []


# --------------------------------------------------------------------------
# a run killed mid-stream, two runs at once


def cli_config(tmp_path, params: dict[str, Any], databases: list[str]) -> str:
    config = {k: v for k, v in params.items() if k != "db"}
    config["databases"] = databases
    return write_private(str(tmp_path / "backup.json"), json.dumps(config))


@pytest.mark.parametrize("stage", ["pg_dump", "pg_dumpall"])
def test_killed_mid_run_leaves_nothing_complete(stage, request, pg_server, run_module, cli_procs, tmp_path,
                                                s3_bucket, s3c):
    """SIGKILL the scheduled job while pg_dump streams (multipart upload under way), or after the data file and
    its checksum files are in place but before the manifest (pg_dumpall of the globals is running)."""
    db = request.getfixturevalue("big_db" if stage == "pg_dump" else "pg_db")
    bucket = s3_bucket["bucket"]
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir, hold=(stage,))
    backup_dir = tmp_path / "backups"
    s3 = {**s3_bucket, "part_size_mb": 5}
    params = job_params(pg_server, db, backup_dir, s3=s3, globals=True, pg_bin_dir=gate.dir)
    proc = cli_procs.start("backup", "--config", cli_config(tmp_path, params, [db]))
    wait_for(lambda: gate.dumped(stage), what=f"{stage} to stream its output")
    if stage == "pg_dump":
        partial = wait_for(lambda: glob.glob(str(backup_dir / f".{db}_full_*.dump.zst.partial")), what="partial file")
        wait_for(lambda: [u for u in s3_uploads(s3c, bucket) if s3_parts(s3c, bucket, u)], what="uploaded parts")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    cli_procs.kill_session(proc)  # its children (held wrapper, zstd) go too

    # the state a crash leaves
    if stage == "pg_dump":
        assert os.path.exists(partial[0]) and s3_uploads(s3c, bucket)
    else:  # data and checksum files in place on disk, data object complete in S3: all without a manifest
        names = backup_files(str(backup_dir))
        assert [n for n in names if n.endswith(".dump.zst")] and [n for n in names if n.endswith(".sha256")]
        assert [k for k in s3_keys(s3c, bucket) if k.endswith(".dump.zst")]
    assert not [n for n in backup_files(str(backup_dir)) if n.endswith(".manifest.json")]
    assert listing(run_module, backup_dir, s3, db) == []

    # the next run cleans up, locally and in S3, and makes one complete backup
    params["pg_bin_dir"] = None
    again = ok(run_module("pg_backup", params))
    assert again["leftovers_removed"]
    if stage == "pg_dump":
        assert partial[0] in again["leftovers_removed"]
        assert any("(unfinished upload)" in item for item in again["leftovers_removed"])
    new = again["backup"]
    manifest = read_json(new["path"] + ".manifest.json")
    set_files = [manifest["file"], manifest["file"] + ".md5", manifest["file"] + ".sha256",
                 manifest["globals"]["file"], manifest["file"] + ".manifest.json"]
    assert backup_files(str(backup_dir)) == sorted(set_files)
    folder = f"postgresql/{db}/{s3_date(again)}"
    assert s3_keys(s3c, bucket) == sorted(f"{folder}/{n}" for n in set_files)
    assert s3_uploads(s3c, bucket) == []
    assert triples(listing(run_module, backup_dir, s3, db)) == both(new["id"], "daily")


def test_two_concurrent_runs(pg_server, pg_db, run_module, cli_procs, tmp_path):
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir, hold=("pg_dump",))
    backup_dir = tmp_path / "backups"
    first = cli_procs.start("backup", "--config", cli_config(
        tmp_path, job_params(pg_server, pg_db, backup_dir, pg_bin_dir=gate.dir), [pg_db]))
    try:
        wait_for(lambda: gate.dumped("pg_dump"), what="the first run to be dumping")
        started = time.monotonic()
        second = run_module("pg_backup", job_params(pg_server, pg_db, backup_dir))
        elapsed = time.monotonic() - started
        assert second["failed"]
        assert "another run" in second["msg"] and f"pid {first.pid} on {socket.gethostname()}" in second["msg"]
        assert elapsed < 5
        # the second run did not clean up the first one's partial file as a "leftover"
        assert glob.glob(str(backup_dir / f".{pg_db}_full_*.dump.zst.partial"))
    finally:
        gate.release()
    assert first.wait(60) == 0, cli_procs.output(first)
    entries = listing(run_module, backup_dir, None, pg_db)
    assert len(entries) == 1 and entries[0]["kind"] == "daily"


# --------------------------------------------------------------------------
# webhook, metrics


def test_webhook_slack_and_json_bodies(pg_server, pg_db, run_module, tmp_path, webhook):
    def args(n: int, **extra: Any) -> dict[str, Any]:
        return job_params(pg_server, pg_db, tmp_path / f"b{n}", **extra)

    slack = ok(run_module("pg_backup", args(1, notification={"webhook_url": webhook.url("/services/T0/B0/x")})))
    path, body = webhook.received[-1]
    assert path == "/services/T0/B0/x" and set(body) == {"text"}
    assert body["text"].startswith(":white_check_mark: ")
    assert f"Backup of {pg_db} on {socket.gethostname()} succeeded" in body["text"]
    assert slack["backup"]["id"]

    generic = ok(run_module("pg_backup", args(2, notification={"webhook_url": webhook.url("/json"), "webhook_format": "json"})))
    path, body = webhook.received[-1]
    assert path == "/json"
    assert (body["event"], body["status"], body["name"], body["source_type"], body["host"], body["error"]) == \
        ("backup", "success", pg_db, "database", socket.gethostname(), None)
    assert body["database"] == pg_db  # the event's key of before, until 1.0.0
    assert body["backup"]["id"] == generic["backup"]["id"] and body["backup"]["sha256"] == generic["backup"]["sha256"]
    assert body["backup"]["size"] == generic["backup"]["size"] and body["duration_s"] > 0

    failed = run_module("pg_backup", {**args(3, notification={"webhook_url": webhook.url("/fail")}), "db": f"{pg_db}_nope"})
    assert failed["failed"]
    path, body = webhook.received[-1]
    assert path == "/fail" and body["text"].startswith(":rotating_light: ")
    assert "FAILED" in body["text"] and "does not exist" in body["text"]

    count = len(webhook.received)
    ok(run_module("pg_backup", args(4, notification={"webhook_url": webhook.url("/quiet"), "notify_on": "failure"})))
    assert len(webhook.received) == count


def test_webhook_outage_is_only_a_warning(pg_server, pg_db, run_module, tmp_path):
    token = secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{closed_port()}/services/{token}"
    backup_dir = tmp_path / "backups"
    result = ok(run_module("pg_backup", job_params(pg_server, pg_db, backup_dir, notification={"webhook_url": url})))
    assert os.path.exists(result["backup"]["path"] + ".manifest.json")
    assert [w for w in result["warnings"] if "webhook notification failed" in w]
    assert not result.get("deprecations"), result.get("deprecations")
    log = run_log(backup_dir)
    assert "WARNING: webhook notification failed" in log
    for text in (json.dumps(result), log):
        assert token not in text


def test_metrics_textfile(pg_server, pg_db, run_module, tmp_path):
    metrics_dir = tmp_path / "textfile"
    metrics_dir.mkdir()
    prom = str(metrics_dir / f"doctorq_backup_{pg_db}.prom")
    before = time.time()
    good = ok(run_module("pg_backup", job_params(pg_server, pg_db, tmp_path / "b1", notification={"metrics_dir": str(metrics_dir)})))
    after = time.time()
    with open(prom, encoding="utf-8") as handle:
        text = handle.read()
    samples = prom_samples(prom)
    assert set(samples) == {"doctorq_backup_last_run_status", "doctorq_backup_last_run_timestamp_seconds",
                            "doctorq_backup_last_success_timestamp_seconds", "doctorq_backup_last_duration_seconds",
                            "doctorq_backup_last_size_bytes"}
    for name in samples:
        assert f"# TYPE {name} gauge" in text and f'{name}{{name="{pg_db}",database="{pg_db}"}}' in text
    assert samples["doctorq_backup_last_run_status"] == 1
    assert before - 1 <= samples["doctorq_backup_last_success_timestamp_seconds"] <= after + 1
    assert before - 1 <= samples["doctorq_backup_last_run_timestamp_seconds"] <= after + 1
    assert samples["doctorq_backup_last_size_bytes"] == good["backup"]["size"]
    assert 0 < samples["doctorq_backup_last_duration_seconds"] < after - before + 1
    assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644  # node_exporter reads it; nothing secret in it

    # a failed run says so, and keeps the time of the last success (what a staleness alert needs)
    bad = run_module("pg_backup", job_params(pg_server, pg_db, tmp_path / "b2", notification={"metrics_dir": str(metrics_dir)},
                                             login_password="wrong"))
    assert bad["failed"]
    failed = prom_samples(prom)
    assert failed["doctorq_backup_last_run_status"] == 0
    assert failed["doctorq_backup_last_run_timestamp_seconds"] >= samples["doctorq_backup_last_run_timestamp_seconds"]
    assert failed.get("doctorq_backup_last_success_timestamp_seconds") == \
        samples["doctorq_backup_last_success_timestamp_seconds"]


# --------------------------------------------------------------------------
# secrets


def test_secrets_stay_out_of_argv_environment_logs_and_results(pg_server, pg_db, cli_procs, tmp_path, s3_bucket, s3c, webhook):
    token = secrets.token_urlsafe(16)
    hidden = {"login_password": pg_server.password, "s3 secret_key": s3_bucket["secret_key"], "webhook_url": token}
    gate = GatedBin(str(tmp_path / "gate"), pg_server.bin_dir, hold=("pg_dump",))
    backup_dir = tmp_path / "backups"
    params = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, globals=True, pg_bin_dir=gate.dir,
                        notification={"webhook_url": webhook.url(f"/services/{token}"), "webhook_format": "json"})
    proc = cli_procs.start("backup", "--config", cli_config(tmp_path, params, [pg_db]))
    try:
        wait_for(lambda: gate.dumped("pg_dump"), what="pg_dump to be streaming")
        # every process of the run while the dump streams: the CLI, pg_dump's wrapper, zstd
        pids = cli_procs.session_pids(proc)
        commands = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ").decode()
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    environ = handle.read().replace(b"\0", b"\n").decode()
            except (FileNotFoundError, ProcessLookupError):
                continue  # the held wrapper's short-lived `sleep`
            assert_no_secret(cmdline, hidden, f"the argv of pid {pid} ({cmdline})")
            assert_no_secret(environ, hidden, f"the environment of pid {pid} ({cmdline})")
            commands.append(cmdline)
        assert any("zstd" in c for c in commands) and any("pg_dump" in c for c in commands), commands
        argv, env = gate.calls("pg_dump")[0]
        assert "PGPASSWORD" not in env
        passfile = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(passfile)).st_mode) == 0o700
        assert_no_secret(" ".join(argv), hidden, "pg_dump's argv")
    finally:
        gate.release()
    assert proc.wait(60) == 0, cli_procs.output(proc)
    assert not os.path.exists(passfile)  # removed at the end of the run
    for argv, env in gate.calls("pg_dumpall"):
        assert "PGPASSWORD" not in env
        assert_no_secret(" ".join(argv) + "\n".join(f"{k}={v}" for k, v in env.items()), hidden, "pg_dumpall")
    out, err = cli_procs.output(proc)
    assert_no_secret(out + err, hidden, "the CLI's output")
    assert "Backup completed successfully" in out
    for rel in tree(str(backup_dir)):
        with open(backup_dir / rel, "rb") as handle:
            assert_no_secret(handle.read().decode("utf-8", "replace"), hidden, rel)
    for key in s3_keys(s3c, s3_bucket["bucket"]):
        if not key.endswith((".zst", ".gz")):
            assert_no_secret(s3_body(s3c, s3_bucket["bucket"], key).decode(), hidden, key)
    assert webhook.received and all(token not in json.dumps(body) for _path, body in webhook.received)

    # the result of a run with all three secrets set (the module's own JSON is checked by the failure tests:
    # authentication, S3 credentials, webhook outage)
    params.update(pg_bin_dir=None, backup_dir=str(tmp_path / "engine"))
    engine = run_backup(BackupJob.from_params(params))
    assert not engine.get("failed"), engine.get("msg")
    assert_no_secret(json.dumps(engine), hidden, "the engine's result")
