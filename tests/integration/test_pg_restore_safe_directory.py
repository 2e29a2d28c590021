# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore_safe and drills from directory backups (pg_dump -Fd -j 2), on disk, SeaweedFS and moto (Glacier).

Every round trip ends with the same table contents as the source, and as a
stock ``pg_restore -j2`` of the same directory. A damaged or missing file is
refused before anything is touched (no safety backup, no new database, no
download kept). Restores from S3 run from a second, empty backup directory
(a "new server"), so the bytes can only have come from the bucket.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

# dbs and moto_restores are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, GlacierObject, backup, dbs, failed, flip_byte, modify, moto_restores, ok, restore_args,
)


@pytest.fixture
def dirs(tmp_path) -> tuple[str, str]:
    """(backup_dir of the host that made the backups, backup_dir of the host that restores)."""
    return str(tmp_path / "backup-host"), str(tmp_path / "restore-host")


def dir_backup(run_module, pg_server, db: str, backup_dir: str, s3: dict[str, Any] | None = None) -> dict[str, Any]:
    made = backup(run_module, pg_server, db, backup_dir, s3=s3, jobs=2, compression="gzip")
    assert made["path"].endswith(".dir") and os.path.isdir(made["path"]), made
    return made


def table_files(path: str) -> list[str]:
    """The table data files of a directory dump (not toc.dat), largest first."""
    names = [n for n in os.listdir(path) if n != "toc.dat"]
    return sorted(names, key=lambda n: -os.path.getsize(os.path.join(path, n)))


def dir_prefix(made: dict[str, Any]) -> str:
    return made["s3_uri"].split("/", 3)[3]


def work_files(backup_dir: str) -> list[str]:
    work = os.path.join(backup_dir, ".restore-work")
    return os.listdir(work) if os.path.isdir(work) else []


def stock_restore(pg_server, dbs, path: str) -> str:
    """A stock ``pg_restore -j2`` of the directory into a new database: what the README's one line does."""
    target = dbs.empty(dbs.name("_stock"))
    argv = [os.path.join(pg_server.bin_dir, "pg_restore"), "-j", "2", "--exit-on-error", "--no-owner", "-d", target,
            path]
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **pg_server.libpq_env(target)})
    return target


def pg_restore_logged(result: dict[str, Any], jobs: int) -> bool:
    return any("pg_restore into" in line and f"({jobs} job(s))" in line for line in result["log"])


# --------------------------------------------------------------------------
# local disk


def test_directory_round_trip_from_disk(run_module, pg_server, table_digest, dbs, dirs) -> None:
    made_on = dirs[0]
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = dir_backup(run_module, pg_server, db, made_on)
    modify(pg_server, db)
    modified = table_digest(pg_server, db)

    plan = ok(run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db), check_mode=True))
    assert plan["checksums"]["verified"] is True and plan["source"]["format"] == "directory"

    result = ok(run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db)))
    assert table_digest(pg_server, db) == original
    assert table_digest(pg_server, result["previous_database"]) == modified
    assert result["source"]["location"] == "local" and result["source"]["ref"] == made["path"]
    assert result["source"]["files"] == len(os.listdir(made["path"]))
    assert pg_restore_logged(result, min(2, os.cpu_count() or 1))  # the backup's own jobs by default
    assert "verify" in result["durations"] and "download" not in result["durations"]
    assert work_files(made_on) == []  # read in place: no copy
    assert result["tables"]["missing"] == [] and result["tables"]["mismatched"] == []

    # the same directory through stock pg_restore -j2: the same tables
    assert table_digest(pg_server, stock_restore(pg_server, dbs, made["path"])) == original


def test_corrupted_or_missing_table_file_on_disk_is_refused(run_module, pg_server, table_digest, dbs, dirs) -> None:
    made_on = dirs[0]
    db = dbs.sample()
    made = dir_backup(run_module, pg_server, db, made_on)
    modify(pg_server, db)
    before = table_digest(pg_server, db)
    names = dbs.mine()
    damaged = table_files(made["path"])[0]
    flip_byte(os.path.join(made["path"], damaged))  # same size: still listed as complete

    for source in (made["path"], "latest"):
        result = run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db, source=source))
        msg = failed(result)
        assert f"file {damaged} of directory backup {made['id']}" in msg and "does not match the manifest" in msg, msg
        assert table_digest(pg_server, db) == before and dbs.mine() == names
        assert not os.path.exists(os.path.join(made_on, "safety"))

    flip_byte(os.path.join(made["path"], damaged))  # back as it was; now another file goes missing
    missing = table_files(made["path"])[-1]
    os.unlink(os.path.join(made["path"], missing))
    msg = failed(run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db, source=made["path"])))
    assert f"file {missing} of directory backup {made['id']}" in msg and "is missing" in msg, msg
    assert table_digest(pg_server, db) == before and dbs.mine() == names


def test_drill_of_a_directory_backup(run_module, pg_server, dbs, dirs, tmp_path) -> None:
    made_on = dirs[0]
    db = dbs.sample()
    made = dir_backup(run_module, pg_server, db, made_on)
    drill = ok(run_module("restore_drill", {**pg_server.params(db), "backup_dir": made_on,
                                            "report_dir": str(tmp_path / "reports")}))["report"]
    assert drill["status"] == "success", drill.get("error")
    assert drill["backup_id"] == made["id"] and drill["rto_s"] > 0
    assert drill["tables"]["missing"] == [] and drill["tables"]["expected"] >= 5
    assert not [n for n in dbs.mine() if "__drill_" in n]  # the scratch database is gone


# --------------------------------------------------------------------------
# SeaweedFS


def test_directory_round_trip_from_s3(run_module, pg_server, table_digest, dbs, dirs, s3_bucket) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = dir_backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    modify(pg_server, db)

    plan = ok(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket),
                         check_mode=True))
    assert plan["checksums"]["verified"] is True and plan["source"]["location"] == "s3"
    assert not os.path.exists(restore_on)

    result = ok(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket, jobs=2)))
    assert table_digest(pg_server, db) == original
    assert result["source"]["location"] == "s3" and result["source"]["ref"] == made["s3_uri"]
    assert pg_restore_logged(result, 2)
    assert any("Downloaded " in line and f"files of {os.path.basename(made['path'])}" in line for line in result["log"])
    assert {"download", "safety_backup", "restore", "verify_after", "swap"} <= set(result["durations"])
    assert work_files(restore_on) == []  # the download is removed after the restore
    assert table_digest(pg_server, stock_restore(pg_server, dbs, made["path"])) == original


def test_corrupted_or_missing_object_in_s3_is_refused(run_module, pg_server, table_digest, dbs, dirs, s3_bucket,
                                                      seaweed) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    made = dir_backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    modify(pg_server, db)
    before = table_digest(pg_server, db)
    names = dbs.mine()
    client, bucket = seaweed.client(), s3_bucket["bucket"]
    damaged = table_files(made["path"])[0]
    key = f"{dir_prefix(made)}/{damaged}"
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))  # same size: still listed as complete

    msg = failed(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket,
                                                 source=made["s3_uri"])))
    assert f"file {damaged} of directory backup {made['id']}" in msg and "does not match the manifest" in msg, msg
    assert "download removed" in msg
    assert table_digest(pg_server, db) == before and dbs.mine() == names
    assert work_files(restore_on) == []  # nothing of the download is kept
    assert not os.path.exists(os.path.join(restore_on, "safety"))

    missing = table_files(made["path"])[-1]
    client.delete_object(Bucket=bucket, Key=f"{dir_prefix(made)}/{missing}")
    msg = failed(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket,
                                                 source=made["s3_uri"])))
    assert f"file {os.path.basename(made['path'])}/{missing} of backup {made['id']} is missing" in msg, msg
    assert table_digest(pg_server, db) == before and dbs.mine() == names
    assert work_files(restore_on) == []


# --------------------------------------------------------------------------
# moto: every object of the directory in GLACIER


def test_glacier_retrieval_of_a_directory_backup(run_module, pg_server, table_digest, dbs, dirs, moto_bucket,
                                                 moto_s3, moto_restores) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = dir_backup(run_module, pg_server, db, made_on, s3=moto_bucket)
    files = sorted(os.listdir(made["path"]))
    client = moto_s3.client()
    glaciers = {name: GlacierObject(client, moto_bucket["bucket"], f"{dir_prefix(made)}/{name}", moto_restores)
                for name in files}
    modify(pg_server, db)
    modified = table_digest(pg_server, db)
    names = dbs.mine()
    args = restore_args(pg_server, db, restore_on, confirm=db, s3=moto_bucket, archive={"tier": "Expedited"})
    dirname = os.path.basename(made["path"])

    plan = ok(run_module(MODULE, args, check_mode=True))
    assert plan["plan"]["archive_state"] == "pending" and plan["checksums"]["verified"] is False
    assert all(g.restore_header() is None for g in glaciers.values())

    # every object gets its restore request; pending until all are back
    first = ok(run_module(MODULE, args))
    assert first["pending"] is True and first["changed"] is True
    assert first["archive"] == {f"{dirname}/{name}": {"storage_class": "GLACIER", "restore": "requested"}
                                for name in files}
    assert all(g.restore_header() is not None for g in glaciers.values())
    assert table_digest(pg_server, db) == modified and dbs.mine() == names

    # all but one back: still pending, nothing requested again, nothing changed
    glaciers[files[0]].start_retrieval()
    for glacier in list(glaciers.values())[1:]:
        glacier.transition(1)
        glacier.restore_header()  # None -> IN_PROGRESS
        glacier.transition(1)
        assert glacier.restore_header().startswith('ongoing-request="false"')
    moto_restores(10 ** 9)
    second = ok(run_module(MODULE, args))
    assert second["pending"] is True and second["changed"] is False
    assert second["archive"] == {f"{dirname}/{files[0]}": {"storage_class": "GLACIER", "restore": "in progress"}}
    assert table_digest(pg_server, db) == modified and dbs.mine() == names

    # the last one back: restored
    moto_restores(1)
    assert glaciers[files[0]].restore_header().startswith('ongoing-request="false"')
    moto_restores(10 ** 9)
    third = ok(run_module(MODULE, args))
    assert not third.get("pending") and third["checksums"]["verified"] is True
    assert table_digest(pg_server, db) == original
    assert table_digest(pg_server, third["previous_database"]) == modified
    assert work_files(restore_on) == []
