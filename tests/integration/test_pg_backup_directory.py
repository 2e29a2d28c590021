"""Directory backups (pg_backup ``jobs``: pg_dump -Fd -j N) against the real PostgreSQL 15 and SeaweedFS (issue 13).

Everything a one-file backup does, for the directory: listed complete on disk
and in S3, ``sha256sum -c``/``md5sum -c`` from the backup directory, stock
``pg_restore -j2``, ``verify`` catching a damaged table file, S3 failing
mid-dump (local copy kept, the run fails at its end), a ``kill -9`` mid-dump
(nothing listed, the next run cleans it), weekly copies and retention on
disk and in S3, the catch-up after an outage, and check mode's plan.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import signal
import subprocess
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import dirdump, listing
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store
from backup_support import (
    CliProcesses, Proxy, add_text_jsonb_table, next_second, read_json, run_cli, s3_keys, s3_uploads, wait_for,
    write_private,
)

DAY = dt.timedelta(days=1)


@pytest.fixture
def big_db(pg_server, pg_db: str) -> str:
    """The sample database plus a text/jsonb table pg_dump takes a moment to write."""
    return add_text_jsonb_table(pg_server, pg_db, 300000)


@pytest.fixture
def s3c(seaweed):
    return seaweed.client()


@pytest.fixture
def cli_procs(tmp_path):
    procs = CliProcesses(str(tmp_path))
    yield procs
    procs.close()


def params_for(pg_server, db: str, backup_dir, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": str(backup_dir), "jobs": 2, "compression": "gzip",
            "weekly": "never", **extra}


def backup(params: dict[str, Any], now: dt.datetime | None = None, *, fails: bool = False) -> dict[str, Any]:
    result = run_backup(BackupJob.from_params(params), now=now)
    assert bool(result.get("failed")) is fails, result.get("msg")
    return result


def listed(backup_dir, s3: dict[str, Any] | None, db: str) -> list[tuple[str, str, str]]:
    stores = listing.stores(str(backup_dir), s3util.S3Config.from_params(s3) if s3 else None)
    return sorted((m.id, m.kind, m.location) for m in listing.list_backups(stores, db))


def restore_and_compare(pg_server, db: str, directory: str, table_digest) -> None:
    """Stock pg_restore -j2 (the README's one line) into a new database: the same tables, the same rows."""
    target = f"{db}_from_dir"
    pg_server.query(f'CREATE DATABASE "{target}"')
    env = {**os.environ, **pg_server.libpq_env(target)}
    done = subprocess.run([os.path.join(pg_server.bin_dir, "pg_restore"), "-j", "2", "-d", target, directory],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    original = table_digest(pg_server, db)
    assert original["public.big"][0] == 300000
    assert table_digest(pg_server, target) == original


def test_jobs_2_to_disk_and_s3_is_complete_checkable_and_restorable(pg_server, big_db, tmp_path, s3_bucket, s3c,
                                                                    table_digest, run_module):
    backup_dir = tmp_path / "backups"
    result = run_module("pg_backup", params_for(pg_server, big_db, backup_dir, s3=s3_bucket))  # the module's own spec
    assert not result.get("failed"), result.get("msg")
    facts = result["backup"]
    directory = facts["path"]
    assert directory.endswith(".dir") and os.path.isdir(directory)
    assert facts["format"] == "directory" and facts["jobs"] == 2 and facts["file_count"] == len(os.listdir(directory))

    manifest = read_json(directory + ".manifest.json")
    assert manifest["format"] == "directory" and manifest["jobs"] == 2 and manifest["manifest_version"] == 3
    assert [f["name"] for f in manifest["files"]] == sorted(os.listdir(directory))
    assert manifest["size"] == sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    assert "toc.dat" in os.listdir(directory) and any(n.endswith(".dat.gz") for n in os.listdir(directory))

    # sha256sum -c / md5sum -c from the backup directory check every file
    for tool, suffix in (("sha256sum", ".sha256"), ("md5sum", ".md5")):
        done = subprocess.run([tool, "-c", os.path.basename(directory) + suffix], cwd=backup_dir,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.count(": OK") == len(manifest["files"]), done.stdout

    # S3: one object per file under <name>.dir/, the sidecars (the same bytes) and the manifest beside it
    folder = f"postgresql/{big_db}/{manifest['started_at'][:10]}"
    name = os.path.basename(directory)
    assert s3_keys(s3c, s3_bucket["bucket"]) == sorted(
        [f"{folder}/{name}/{f['name']}" for f in manifest["files"]]
        + [f"{folder}/{name}{s}" for s in (".md5", ".sha256", ".manifest.json")])
    with open(directory + ".sha256", "rb") as handle:
        assert s3c.get_object(Bucket=s3_bucket["bucket"], Key=f"{folder}/{name}.sha256")["Body"].read() == handle.read()
    assert sorted(manifest["s3"]["objects"]) == [f["name"] for f in manifest["files"]]
    assert facts["s3_uri"] == f"s3://{s3_bucket['bucket']}/{folder}/{name}"
    assert listed(backup_dir, s3_bucket, big_db) == [(facts["id"], "daily", "local"), (facts["id"], "daily", "s3")]

    # verify re-hashes every file, on disk and in S3
    stores = listing.stores(str(backup_dir), s3util.S3Config.from_params(s3_bucket))
    for found in listing.list_backups(stores, big_db):
        assert listing.verify(found, listing.store_for(found, stores))["ok"] is True, found.location

    restore_and_compare(pg_server, big_db, directory, table_digest)

    # a damaged table file: verify says which, and the local copy no longer counts as verified
    table_file = max((f for f in manifest["files"] if f["name"] != "toc.dat"), key=lambda f: f["size"])
    with open(os.path.join(directory, table_file["name"]), "r+b") as handle:
        handle.seek(table_file["size"] // 2)
        byte = handle.read(1)
        handle.seek(table_file["size"] // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    local = next(m for m in listing.list_backups(stores, big_db) if m.location == "local")
    verdict = listing.verify(local, stores[0])
    assert verdict["ok"] is False and verdict["state"] == "corrupt"
    assert f"{name}/{table_file['name']}" in verdict["message"]
    info = run_module("backup_info", {"backup_dir": str(backup_dir), "s3": s3_bucket, "name": big_db, "verify": True})
    assert info["corrupt"] == [facts["id"]]
    assert {b["location"]: b["verification"]["state"] for b in info["backups"]} == {"local": "corrupt", "s3": "verified"}


def test_zstd_needs_pg_dump_16_and_fails_before_any_work(pg_server, pg_db, tmp_path):
    backup_dir = tmp_path / "backups"
    result = backup(params_for(pg_server, pg_db, backup_dir, compression="zstd"), fails=True)
    assert "writes directory dumps with gzip only" in result["msg"] and "compression: gzip" in result["msg"]
    assert not glob.glob(str(backup_dir / "*.dir*"))
    with pytest.raises(ConfigError, match="gzip only"):  # check mode too (the module fails the task with it)
        run_backup(BackupJob.from_params(params_for(pg_server, pg_db, backup_dir, compression="zstd")), check_mode=True)


def test_a_level_for_zstd_without_compression_given_says_why_it_is_gzip(pg_server, pg_db, tmp_path):
    backup_dir = tmp_path / "backups"
    result = backup(params_for(pg_server, pg_db, backup_dir, compression=None, compression_level=12), fails=True)
    assert "compression_level 12 is out of range for gzip: use 1 to 9" in result["msg"]
    assert "compression is not given, and pg_dump 15 writes directory dumps with gzip only" in result["msg"]
    assert not glob.glob(str(backup_dir / "*.dir*"))


def test_check_mode_plans_a_directory_backup(pg_server, pg_db, tmp_path, s3_bucket):
    backup_dir = tmp_path / "backups"
    plan = run_backup(BackupJob.from_params(params_for(pg_server, pg_db, backup_dir, s3=s3_bucket)), check_mode=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["plan"]["path"].endswith(".dir") and plan["plan"]["s3_uri"].endswith(".dir")
    assert any("directory format with 2 jobs" in line for line in plan["log"])
    assert not os.path.exists(plan["plan"]["path"])


def test_s3_failing_mid_dump_keeps_the_local_directory_and_fails_at_the_end(pg_server, big_db, tmp_path, s3_bucket,
                                                                            s3c, seaweed, monkeypatch):
    proxy = Proxy(seaweed.endpoint_url)
    s3 = {**s3_bucket, "endpoint_url": proxy.url, "max_attempts": 1}
    opened = []
    real_open = dirdump.S3Upload.open

    def open_then_cut(self, name, size):
        opened.append(name)
        if len(opened) == 2:
            proxy.cut()  # S3 goes away after the first file, while pg_dump still writes
        return real_open(self, name, size)

    monkeypatch.setattr(dirdump.S3Upload, "open", open_then_cut)
    backup_dir = tmp_path / "backups"
    result = backup(params_for(pg_server, big_db, backup_dir, s3=s3), fails=True)

    assert "is complete and kept" in result["msg"] and result["backup"]["path"] in result["msg"]
    assert result["backup"]["s3_uri"] is None
    directory = result["backup"]["path"]
    manifest = read_json(directory + ".manifest.json")
    assert manifest["s3"] is None and len(manifest["files"]) == len(os.listdir(directory)) > 2
    assert listed(backup_dir, None, big_db) == [(result["backup"]["id"], "daily", "local")]
    # nothing of it is listed complete in S3 (what got there has no manifest: the next run's leftovers)
    assert S3Store(s3util.S3Config.from_params(s3_bucket)).list(big_db) == []
    assert not [k for k in s3_keys(s3c, s3_bucket["bucket"]) if k.endswith(".manifest.json")]

    # catch-up: the next run that reaches S3 uploads every file of it, verified, and its manifest learns where
    monkeypatch.setattr(dirdump.S3Upload, "open", real_open)
    next_second()
    again = backup(params_for(pg_server, big_db, backup_dir, s3=s3_bucket))
    assert [c["id"] for c in again["caught_up"]] == [result["backup"]["id"]]
    caught = read_json(directory + ".manifest.json")
    assert caught["s3"]["uri"] == again["caught_up"][0]["s3_uri"] and sorted(caught["s3"]["objects"]) == \
        [f["name"] for f in caught["files"]]
    assert listed(backup_dir, s3_bucket, big_db) == sorted(
        (i, "daily", where) for i in (result["backup"]["id"], again["backup"]["id"]) for where in ("local", "s3"))
    stores = listing.stores(str(backup_dir), s3util.S3Config.from_params(s3_bucket))
    for found in listing.list_backups(stores, big_db):
        assert listing.verify(found, listing.store_for(found, stores))["ok"] is True
    assert s3_uploads(s3c, s3_bucket["bucket"]) == []


def test_kill_9_mid_dump_leaves_nothing_complete_and_the_next_run_cleans_it(pg_server, big_db, tmp_path, s3_bucket,
                                                                            s3c, cli_procs):
    backup_dir = tmp_path / "backups"
    params = params_for(pg_server, big_db, backup_dir, s3=s3_bucket)
    config = {k: v for k, v in params.items() if k != "db"}
    config["databases"] = [big_db]
    path = write_private(str(tmp_path / "backup.json"), json.dumps(config))
    proc = cli_procs.start("backup", "--config", path)
    folder = f"postgresql/{big_db}/"
    wait_for(lambda: [k for k in s3_keys(s3c, s3_bucket["bucket"], folder) if ".dir/" in k], timeout=120,
             what="a file of the directory uploaded")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    cli_procs.kill_session(proc)

    left = glob.glob(str(backup_dir / f"{big_db}_full_*.dir"))
    assert left and not glob.glob(str(backup_dir / "*.manifest.json"))
    assert listed(backup_dir, s3_bucket, big_db) == []

    next_second()  # names have whole seconds: a run in the killed run's second would reuse the leftover's name
    again = backup(params_for(pg_server, big_db, backup_dir, s3=s3_bucket))
    assert os.path.basename(again["backup"]["path"]) != os.path.basename(left[0])
    assert left[0] in again["leftovers_removed"]
    assert any(".dir/" in item for item in again["leftovers_removed"])  # its objects in S3 too
    assert not os.path.exists(left[0])
    assert any("leftover(s) of interrupted runs" in line for line in again["log"])
    name = os.path.basename(again["backup"]["path"])
    assert sorted(n for n in os.listdir(backup_dir) if not n.startswith("backup_") and not n.endswith(".lock")) == \
        sorted([name, "weekly"] + [name + s for s in (".md5", ".sha256", ".manifest.json")])
    assert all(f"/{name}" in k for k in s3_keys(s3c, s3_bucket["bucket"], folder))
    assert s3_uploads(s3c, s3_bucket["bucket"]) == []
    assert listed(backup_dir, s3_bucket, big_db) == [(again["backup"]["id"], "daily", w) for w in ("local", "s3")]
    checked = run_cli("list", "--config", path, "--verify")  # the scheduled job's listing re-hashes every file
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("  verified") == 2 and again["backup"]["id"] in checked.stdout


def test_weekly_copies_and_retention_of_directory_backups(pg_server, pg_db, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    params = params_for(pg_server, pg_db, backup_dir, s3=s3_bucket, weekly="always", retention_min_count=1,
                        retention_daily_days=1, retention_weekly_days=1)
    first = backup(params)["backup"]
    directory = first["path"]
    weekly_dir = first["weekly_path"]
    assert weekly_dir == os.path.join(backup_dir, "weekly", os.path.basename(directory))
    for name in os.listdir(directory):  # hard links of every file
        assert os.path.samefile(os.path.join(directory, name), os.path.join(weekly_dir, name))
    name = os.path.basename(directory)
    date = read_json(directory + ".manifest.json")["started_at"][:10]
    weekly_keys = s3_keys(s3c, s3_bucket["bucket"], f"postgresql/weekly/{pg_db}/{date}/")
    assert len([k for k in weekly_keys if f"/{name}/" in k]) == len(os.listdir(directory))
    assert listed(backup_dir, s3_bucket, pg_db) == sorted(
        (first["id"], kind, where) for kind in ("daily", "weekly") for where in ("local", "s3"))

    # two days later a new backup: the first one's daily and weekly copies go, on disk and in S3
    second = backup(params, now=utcnow() + 2 * DAY)["backup"]
    assert listed(backup_dir, s3_bucket, pg_db) == sorted(
        (second["id"], kind, where) for kind in ("daily", "weekly") for where in ("local", "s3"))
    assert not os.path.exists(directory) and not os.path.exists(weekly_dir)
    assert not glob.glob(str(backup_dir / f"{first['id']}*")) and not glob.glob(str(backup_dir / "weekly" / f"{first['id']}*"))
    assert not [k for k in s3_keys(s3c, s3_bucket["bucket"]) if first["id"] in k]
    assert LocalStore(str(backup_dir)).leftovers(pg_db) == []
