"""backup_info against real backups on disk and in SeaweedFS: listing, filters, verification."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import utcnow

DAY = dt.timedelta(days=1)


def job_params(pg_server, db: str, backup_dir, **extra):
    return {**pg_server.params(db), "backup_dir": str(backup_dir), **extra}


def engine_run(params, now):
    result = run_backup(BackupJob.from_params(params), now=now)
    assert not result.get("failed"), result.get("msg")
    return result["backup"]


def info(run_module, **args):
    result = run_module("backup_info", {k: (str(v) if k == "backup_dir" else v) for k, v in args.items()})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    return result


def flip_byte(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(os.fstat(handle.fileno()).st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.fixture
def backups(pg_server, pg_db, tmp_path, s3_bucket):
    """Backups of pg_db 2 days (also weekly) and 1 day ago, and one of another database 12 h ago."""
    backup_dir = tmp_path / "backups"
    now = utcnow()
    base = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, prune=False)
    ids = [engine_run({**base, "weekly": weekly}, now - days * DAY)["id"] for days, weekly in ((2, "always"), (1, "never"))]
    other = f"{pg_db}_other"
    pg_server.query(f'CREATE DATABASE "{other}" TEMPLATE template0')
    other_id = engine_run({**base, "db": other, "weekly": "never"}, now - DAY / 2)["id"]
    return backup_dir, ids, other, other_id


def test_lists_newest_first_with_filters(run_module, pg_db, s3_bucket, backups):
    backup_dir, (older, newest), other, other_id = backups

    everything = info(run_module, backup_dir=backup_dir, s3=s3_bucket)["backups"]
    started = [b["started_at"] for b in everything]
    assert started == sorted(started, reverse=True)
    assert len(everything) == 8  # (2 dailies + 1 weekly of pg_db + 1 daily of other) x (disk, S3)
    assert {b["name"] for b in everything} == {pg_db, other}
    assert everything[0]["id"] == other_id

    mine = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=pg_db)["backups"]
    assert {b["name"] for b in mine} == {pg_db}
    assert [b["id"] for b in mine] == [newest] * 2 + [older] * 4
    assert {(b["kind"], b["location"]) for b in mine if b["id"] == older} == \
        {("daily", "local"), ("daily", "s3"), ("weekly", "local"), ("weekly", "s3")}
    for entry in mine:
        assert entry["size"] > 0 and len(entry["sha256"]) == 64 and entry["table_count"] == 5
        if entry["location"] == "local":
            assert os.path.isfile(entry["origin"]) and entry["origin"].startswith(str(backup_dir))
        else:
            assert entry["origin"].endswith(".manifest.json") and entry["storage_class"] == "STANDARD"
            assert entry["s3_uri"] == f"s3://{s3_bucket['bucket']}/{entry['origin'][:-len('.manifest.json')]}"

    weekly = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=pg_db, kind="weekly")["backups"]
    assert [(b["id"], b["kind"]) for b in weekly] == [(older, "weekly")] * 2
    local_dailies = info(run_module, backup_dir=backup_dir, name=pg_db, kind="daily")["backups"]
    assert [(b["id"], b["location"]) for b in local_dailies] == [(newest, "local"), (older, "local")]
    s3_only = info(run_module, s3=s3_bucket, name=pg_db)["backups"]
    assert {b["location"] for b in s3_only} == {"s3"} and len(s3_only) == 3
    limited = info(run_module, backup_dir=backup_dir, name=pg_db, limit=2)["backups"]
    assert [b["id"] for b in limited] == [newest, older]
    nothing = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=f"{pg_db}_none")["backups"]
    assert nothing == []


def test_verify_catches_one_flipped_byte(run_module, pg_db, s3_bucket, seaweed, backups):
    backup_dir, (oldest, newest), _other, _other_id = backups
    clean = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=pg_db, verify=True)
    assert clean["corrupt"] == []
    assert {b["verification"]["state"] for b in clean["backups"]} == {"verified"}
    assert all(b["verification"]["ok"] is True for b in clean["backups"])

    # one byte of the newest local file; one byte of the oldest S3 object (same size, so only the hashes can tell)
    newest_path = str(backup_dir / f"{newest}.dump.zst")
    flip_byte(newest_path)
    client = seaweed.client()
    key = next(b["origin"] for b in clean["backups"]
               if (b["id"], b["kind"], b["location"]) == (oldest, "daily", "s3"))[:-len(".manifest.json")]
    body = bytearray(client.get_object(Bucket=s3_bucket["bucket"], Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=s3_bucket["bucket"], Key=key, Body=bytes(body))

    result = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=pg_db, verify=True)
    states = {(b["id"], b["kind"], b["location"]): b["verification"] for b in result["backups"]}
    corrupt = {k for k, v in states.items() if v["state"] == "corrupt"}
    assert corrupt == {(newest, "daily", "local"), (oldest, "daily", "s3")}
    assert sorted(result["corrupt"]) == sorted([newest, oldest])
    assert all(v["ok"] is False for k, v in states.items() if k in corrupt)
    assert all(v["ok"] is True for k, v in states.items() if k not in corrupt)
    message = states[(newest, "daily", "local")]["message"]
    assert f"{newest}.dump.zst" in message and "differ from the manifest" in message
    # still listed (the size is right): listing is cheap, verification is what catches bit rot
    assert len(result["backups"]) == len(clean["backups"])


def test_verify_covers_the_globals_file(pg_server, pg_db, run_module, tmp_path):
    backup_dir = tmp_path / "backups"
    facts = engine_run(job_params(pg_server, pg_db, backup_dir, globals=True), None)
    flip_byte(str(backup_dir / facts["globals_file"]))
    result = info(run_module, backup_dir=backup_dir, verify=True)
    assert result["corrupt"] == [facts["id"]]
    assert facts["globals_file"] in result["backups"][0]["verification"]["message"]


def test_incomplete_or_foreign_sets_are_never_listed(run_module, pg_db, s3_bucket, seaweed, backups):
    backup_dir, (oldest, newest), _other, _other_id = backups
    client, bucket = seaweed.client(), s3_bucket["bucket"]
    before = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=pg_db)["backups"]
    s3_manifest = {b["id"]: b["origin"] for b in before if b["location"] == "s3" and b["kind"] == "daily"}

    # oldest daily: manifest gone (an interrupted run); newest: data file truncated (damaged); the weekly stays
    os.unlink(backup_dir / f"{oldest}.dump.zst.manifest.json")
    client.delete_object(Bucket=bucket, Key=s3_manifest[oldest])
    with open(backup_dir / f"{newest}.dump.zst", "r+b") as handle:
        handle.truncate(10)
    data_key = s3_manifest[newest][:-len(".manifest.json")]
    client.put_object(Bucket=bucket, Key=data_key, Body=b"short")
    # a manifest this tool did not write, in our naming
    with open(backup_dir / f"{pg_db}_full_20200101_000000.dump.zst.manifest.json", "w", encoding="utf-8") as handle:
        json.dump({"tool": "someone-else", "kind": "daily", "database": pg_db}, handle)
    with open(backup_dir / f"{pg_db}_full_20200101_000000.dump.zst", "w", encoding="utf-8") as handle:
        handle.write("x")

    after = info(run_module, backup_dir=backup_dir, s3=s3_bucket, name=pg_db)["backups"]
    assert {(b["id"], b["kind"], b["location"]) for b in after} == {(oldest, "weekly", "local"), (oldest, "weekly", "s3")}
