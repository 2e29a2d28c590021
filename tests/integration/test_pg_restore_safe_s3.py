# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore_safe from S3: SeaweedFS (a real object store) and moto (the only local Glacier semantics).

Restores run from a second, empty backup directory (a "new server"), so the
bytes can only have come from the bucket. Integrity is tested on SeaweedFS
only: moto does not check checksums.

The Glacier flow: moto answers GET on a GLACIER object with
InvalidObjectState until a restore is requested and finished. How moto
signals "finished": the ``Restore`` header of HEAD, ``ongoing-request="true"``
while the restore runs and ``ongoing-request="false", expiry-date=...`` once
done; GET is refused unless it says "false". By default moto finishes a
restore at once, and (moto 5) a requested restore whose state was never read
reports "false" too. Its state manager (``/moto-api/state-manager``, model
``s3::keyrestore``, states None -> IN_PROGRESS -> RESTORED) lets a test hold
the restore in progress: with ``progression: manual, times: N`` a key
advances one state when its status is read after N requests for it, so
``times: 1`` plus one HEAD moves it one step and a huge ``times`` freezes it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

import pytest

# dbs and moto_restores are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, GlacierObject, backup, backup_at, dbs, failed, modify, moto_restores, ok, restore_args,
)


@pytest.fixture
def dirs(tmp_path) -> tuple[str, str]:
    """(backup_dir of the host that made the backups, backup_dir of the host that restores)."""
    return str(tmp_path / "backup-host"), str(tmp_path / "restore-host")


def data_key(made: dict[str, Any]) -> str:
    return made["s3_uri"].split("/", 3)[3]


def work_files(backup_dir: str) -> list[str]:
    work = os.path.join(backup_dir, ".restore-work")
    return os.listdir(work) if os.path.isdir(work) else []


# --------------------------------------------------------------------------
# SeaweedFS


def test_restore_from_an_s3_uri(run_module, pg_server, table_digest, dbs, dirs, s3_bucket) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    assert made["s3_uri"].startswith(f"s3://{s3_bucket['bucket']}/")
    modify(pg_server, db)
    modified = table_digest(pg_server, db)

    # check mode with the manifest's URI: found, downloaded and verified, nothing kept
    plan = ok(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket,
                                              source=made["s3_uri"] + ".manifest.json"), check_mode=True))
    assert plan["checksums"]["verified"] is True and plan["plan"]["archive_state"] == "available"
    assert not os.path.exists(restore_on)

    result = ok(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket,
                                                source=made["s3_uri"], jobs=1)))

    assert table_digest(pg_server, db) == original
    assert table_digest(pg_server, result["previous_database"]) == modified
    assert result["source"]["location"] == "s3" and result["source"]["ref"] == made["s3_uri"]
    assert result["checksums"] == {"sha256": made["sha256"], "md5": made["md5"], "verified": True}
    assert {"download", "safety_backup", "restore", "verify_after", "swap"} <= set(result["durations"])
    assert any(line.split("] ", 1)[1].startswith("Downloaded ") for line in result["log"])
    assert work_files(restore_on) == []  # the download is removed after the restore
    assert result["safety_backup"].startswith(os.path.join(restore_on, "safety"))


def test_latest_prefers_the_local_copy_and_falls_back_to_s3(run_module, pg_server, dbs, dirs, s3_bucket) -> None:
    made_on = dirs[0]
    db = dbs.sample()
    now = dt.datetime.now(dt.timezone.utc)
    older = backup_at(pg_server, db, made_on, now - dt.timedelta(hours=2), s3=s3_bucket)
    newest = backup_at(pg_server, db, made_on, now - dt.timedelta(hours=1), s3=s3_bucket)
    assert older["s3_uri"] and newest["s3_uri"]

    names = dbs.mine()
    args = restore_args(pg_server, dbs.name("_new"), made_on, source_db=db, s3=s3_bucket)

    # both places hold the newest: the local copy is used (no download). Check mode: the choice is what matters
    result = ok(run_module(MODULE, args, check_mode=True))
    assert result["source"]["id"] == newest["id"] and result["source"]["location"] == "local"
    assert result["checksums"]["verified"] is True and "download" not in result["durations"]

    # the newest set is gone from disk: the S3 copy is the newest complete backup
    for name in os.listdir(made_on):
        if name.startswith(newest["id"]):
            os.unlink(os.path.join(made_on, name))
    result = ok(run_module(MODULE, args, check_mode=True))
    assert result["source"]["id"] == newest["id"] and result["source"]["location"] == "s3"
    assert result["source"]["ref"] == newest["s3_uri"] and "download" in result["durations"]
    assert result["checksums"]["verified"] is True

    # before: the older one, which is on disk again
    before = (now - dt.timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = ok(run_module(MODULE, {**args, "before": before}, check_mode=True))
    assert result["source"]["id"] == older["id"] and result["source"]["location"] == "local"
    assert dbs.mine() == names


def test_corrupted_s3_object_is_refused(run_module, pg_server, table_digest, dbs, dirs, s3_bucket, seaweed) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    modify(pg_server, db)
    before = table_digest(pg_server, db)
    names = dbs.mine()
    client, bucket, key = seaweed.client(), s3_bucket["bucket"], data_key(made)
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))  # same size: still listed as complete
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == made["size"]

    for source in (made["s3_uri"], "latest"):
        result = run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket, source=source))
        msg = failed(result)
        assert "checksum mismatch" in msg and made["sha256"] in msg, msg
        assert result["source"]["location"] == "s3"
        assert table_digest(pg_server, db) == before
        assert dbs.mine() == names
        assert work_files(restore_on) == []  # the damaged download is not kept
        assert not os.path.exists(os.path.join(restore_on, "safety"))


def test_s3_backup_without_manifest_is_refused(run_module, pg_server, dbs, dirs, s3_bucket, seaweed) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    seaweed.client().delete_object(Bucket=s3_bucket["bucket"], Key=data_key(made) + ".manifest.json")
    names = dbs.mine()

    msg = failed(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket,
                                                 source=made["s3_uri"])))
    assert "has no manifest" in msg and "refusing to restore" in msg
    msg = failed(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket)))
    assert "no complete backup" in msg and s3_bucket["bucket"] in msg
    assert dbs.mine() == names


def test_seaweedfs_refuses_archive_restores_with_a_clear_error(run_module, pg_server, table_digest, dbs, dirs,
                                                               s3_bucket, seaweed) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    made = backup(run_module, pg_server, db, made_on, s3={**s3_bucket, "storage_class": "GLACIER"})
    assert seaweed.client().head_object(Bucket=s3_bucket["bucket"], Key=data_key(made))["StorageClass"] == "GLACIER"
    modify(pg_server, db)
    before = table_digest(pg_server, db)
    names = dbs.mine()

    result = run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket, source=made["s3_uri"]))

    msg = failed(result)
    assert "does not support restoring archived objects (MethodNotAllowed)" in msg, msg
    assert "storage class" in msg  # says what to do instead
    assert table_digest(pg_server, db) == before and dbs.mine() == names
    assert not os.path.exists(os.path.join(restore_on, "safety"))


def test_secrets_of_s3_stay_out_of_results_and_logs(run_module, pg_server, dbs, dirs, s3_bucket) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    good = ok(run_module(MODULE, restore_args(pg_server, dbs.name("_a"), restore_on, s3=s3_bucket,
                                              source=made["s3_uri"])))
    wrong_secret = "WrongSecret" + os.urandom(8).hex()
    bad = run_module(MODULE, restore_args(pg_server, dbs.name("_b"), restore_on, source=made["s3_uri"],
                                          s3={**s3_bucket, "secret_key": wrong_secret}))
    assert "SignatureDoesNotMatch" in failed(bad) or "Forbidden" in bad["msg"] or "AccessDenied" in bad["msg"]

    texts = [json.dumps(good), json.dumps(bad)]
    for name in os.listdir(restore_on):
        if name.startswith("restore_"):
            with open(os.path.join(restore_on, name), encoding="utf-8") as handle:
                texts.append(handle.read())
    assert len(texts) >= 4  # two run logs and the audit log
    for text in texts:
        for secret in (s3_bucket["secret_key"], wrong_secret, pg_server.password):
            assert secret not in text


# --------------------------------------------------------------------------
# moto: the Glacier flow


def test_glacier_flow_on_moto(run_module, pg_server, table_digest, dbs, dirs, moto_bucket, moto_s3,
                              moto_restores) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, made_on, s3=moto_bucket)
    glacier = GlacierObject(moto_s3.client(), moto_bucket["bucket"], data_key(made), moto_restores)
    restore_header = glacier.restore_header
    modify(pg_server, db)
    modified = table_digest(pg_server, db)
    names = dbs.mine()
    args = restore_args(pg_server, db, restore_on, confirm=db, s3=moto_bucket, archive={"tier": "Expedited"})

    # check mode: reports the archived state, requests nothing
    plan = ok(run_module(MODULE, args, check_mode=True))
    assert plan["plan"]["archive_state"] == "pending" and plan["checksums"]["verified"] is False
    assert restore_header() is None

    # 1st run: the restore from the archive is requested; pending, changed
    first = ok(run_module(MODULE, args))
    assert first["pending"] is True and first["changed"] is True
    assert first["archive"] == {made["file"]: {"storage_class": "GLACIER", "restore": "requested"}}
    assert "Run this restore again later" in first["msg"] and "Expedited" in first["msg"]
    assert restore_header() is not None
    assert table_digest(pg_server, db) == modified and dbs.mine() == names
    assert not os.path.exists(os.path.join(restore_on, "safety"))

    # moto: the retrieval is now running (one step: None -> IN_PROGRESS), and stays so
    glacier.start_retrieval()

    # 2nd run, waiting up to 3 s (polling every second): still pending, no second request, nothing changed
    started = time.monotonic()
    second = ok(run_module(MODULE, {**args, "archive": {"tier": "Expedited", "wait_timeout": 3, "poll_interval": 1}}))
    assert 3 <= time.monotonic() - started < 60
    assert second["pending"] is True and second["changed"] is False
    assert second["archive"][made["file"]] == {"storage_class": "GLACIER", "restore": "in progress"}
    assert "in progress" in second["msg"]
    waits = sum("Waiting for the archive restore" in line for line in second["log"])
    assert waits >= 2
    assert restore_header() == 'ongoing-request="true"'
    assert table_digest(pg_server, db) == modified and dbs.mine() == names

    # 3rd run waits (polling) while the retrieval finishes, then restores
    with glacier.finished_while_waiting(restore_on, waits):
        third = ok(run_module(MODULE, {**args, "archive": {"tier": "Expedited", "wait_timeout": 60, "poll_interval": 1}}))
    assert restore_header().startswith('ongoing-request="false"')
    assert not third.get("pending") and third["changed"] is True
    assert any("Waiting for the archive restore" in line for line in third["log"])
    assert third["checksums"]["verified"] is True and third["source"]["location"] == "s3"
    assert table_digest(pg_server, db) == original
    assert table_digest(pg_server, third["previous_database"]) == modified

    # the audit log tells the story: two pending runs, then the restore
    with open(os.path.join(restore_on, "restore_audit.jsonl"), encoding="utf-8") as handle:
        assert [json.loads(line)["status"] for line in handle] == ["pending", "pending", "success"]
