"""Retention under faults (issue 11, cases 1, 8 and 15): it never deletes what it must not.

- Case 1: a manifest planted in the backup directory or in S3 (``file`` or
  ``globals.file`` leading outside, names that do not match) is reported and
  ignored: nothing outside ``backup_dir`` or the job's S3 prefix is deleted.
- Case 8: a clock a year ahead (``faketime``, a real CLI process) keeps
  ``retention_min_count`` backups; with the clock back, a future-dated backup
  makes retention refuse to delete anything, with a warning.
- Case 15: check mode's retention plan is exactly what the real run deletes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, run_restore
from backup_support import cli_argv, cli_env, closed_port, read_json, s3_keys, write_private

DAY = dt.timedelta(days=1)


def job_params(pg_server, db: str, backup_dir, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": str(backup_dir), **extra}


def engine_run(params: dict[str, Any], now: dt.datetime | None = None, check_mode: bool = False) -> dict[str, Any]:
    """The engine directly (what the module and the CLI call), with a clock of our choosing."""
    result = run_backup(BackupJob.from_params(params), now=now, check_mode=check_mode)
    assert not result.get("failed"), result.get("msg")
    return result


def triples(entries: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(e["id"], e["kind"], e["location"]) for e in entries}


def listed_ids(run_module, backup_dir, db: str, s3: dict[str, Any] | None = None) -> set[str]:
    args: dict[str, Any] = {"backup_dir": str(backup_dir), "name": db, **({"s3": s3} if s3 else {})}
    result = run_module("backup_info", args)
    assert not result.get("failed"), result.get("msg")
    return {b["id"] for b in result["backups"]}


def planted(template: dict[str, Any], db: str, stamp: str, **over: Any) -> dict[str, Any]:
    """A manifest as this tool writes them, for a backup of ``db`` started at ``stamp``, with ``over`` changed."""
    started = dt.datetime.strptime(stamp, "%Y%m%d_%H%M%S")
    bid = f"{db}_full_{stamp}"
    data = {**template, "id": bid, "database": db, "kind": "daily", "file": f"{bid}.dump.zst", "globals": None,
            "s3": None, "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished_at": started.strftime("%Y-%m-%dT%H:%M:%SZ")}
    data.update(over)
    return data


def write(path, data: bytes | str) -> None:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def s3c(seaweed):
    return seaweed.client()


# --------------------------------------------------------------------------
# case 1: planted manifests


def test_planted_manifests_never_make_retention_delete_outside_backup_dir(pg_server, pg_db, run_module, tmp_path):
    backup_dir, elsewhere = tmp_path / "backups", tmp_path / "elsewhere"
    now = utcnow()
    params = job_params(pg_server, pg_db, backup_dir, weekly="never", retention_daily_days=30, retention_min_count=1)
    real = engine_run({**params, "prune": False}, now=now - DAY)["backup"]
    template = read_json(real["path"] + ".manifest.json")

    # outside the backup directory: a file and its checksum files, and a file named by an absolute path
    precious = {elsewhere / "x": b"precious\n", elsewhere / "x.md5": b"m\n", elsewhere / "x.sha256": b"s\n",
                tmp_path / "absolute-target": b"also precious\n"}
    for path, body in precious.items():
        write(path, body)
    bad = {
        # `file` leads out of the directory (the data exists there, with the size the manifest says)
        f"{pg_db}_full_20200101_020000.dump.zst.manifest.json":
            (planted(template, pg_db, "20200101_020000", file="../elsewhere/x", size=len(b"precious\n")), "file"),
        # `globals.file` is an absolute path; the data file beside it is real and of the right size
        f"{pg_db}_full_20200101_020001.dump.zst.manifest.json":
            (planted(template, pg_db, "20200101_020001", size=4,
                     globals={"file": str(tmp_path / "absolute-target"), "size": 1, "sha256": "0" * 64, "md5": "0" * 32}),
             "globals.file"),
        # an old id whose `file` is the newest real backup: following it would delete a good backup
        f"{pg_db}_full_20200101_020002.dump.zst.manifest.json":
            (planted(template, pg_db, "20200101_020002", file=real["file"], size=real["size"]), "file"),
    }
    write(backup_dir / f"{pg_db}_full_20200101_020001.dump.zst", b"data")
    for name, (manifest, _field) in bad.items():
        write(backup_dir / name, json.dumps(manifest))

    result = engine_run({**params, "prune": True})

    for path, body in precious.items():
        assert path.read_bytes() == body, f"{path} was touched"
    # nothing planted was followed, deleted, or listed; the real backups are intact
    assert result["deleted"] == []
    for name in bad:
        assert (backup_dir / name).exists(), f"the planted {name} was deleted"
    assert (backup_dir / f"{pg_db}_full_20200101_020001.dump.zst").exists()
    assert os.path.getsize(real["path"]) == real["size"]
    assert listed_ids(run_module, backup_dir, pg_db) == {real["id"], result["backup"]["id"]}
    # each one is reported, by name and with the field at fault, in the result and the run log
    with open(result["log_file"], encoding="utf-8") as handle:
        log = handle.read()
    for name, (_manifest, field) in bad.items():
        [warning] = [w for w in result["warnings"] if name in w]
        assert field in warning and "ignored" in warning, warning
        assert name in log

    # the listing and a restore of the newest backup say so too, and never follow them
    info = run_module("backup_info", {"name": pg_db, "backup_dir": str(backup_dir)})
    plan = run_restore(RestoreJob.from_params({**pg_server.params(pg_db), "backup_dir": str(backup_dir),
                                               "confirm": pg_db}), check_mode=True)
    assert plan["source"]["id"] == result["backup"]["id"], plan.get("msg")
    for name in bad:
        assert [w for w in info["warnings"] if name in w and "ignored" in w], info["warnings"]
        assert [w for w in plan["warnings"] if name in w and "ignored" in w], plan["warnings"]


def test_planted_s3_manifests_never_make_retention_delete_outside_the_prefix(pg_server, pg_db, tmp_path,
                                                                             s3_bucket, s3c):
    bucket = s3_bucket["bucket"]
    backup_dir = tmp_path / "backups"
    now = utcnow()
    params = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, weekly="never", retention_daily_days=30,
                        retention_min_count=1)
    real = engine_run({**params, "prune": False}, now=now - DAY)["backup"]
    template = read_json(real["path"] + ".manifest.json")
    outside = ["outside/absolute", "outside/dotdot", "other-prefix/db/2020-01-01/data"]
    for key in outside:
        s3c.put_object(Bucket=bucket, Key=key, Body=b"precious\n")
    day_dir = f"postgresql/{pg_db}/2020-01-01"
    plants = {
        "20200101_020000": {"globals": {"file": "/outside/absolute", "size": 9, "sha256": "0" * 64, "md5": "0" * 32}},
        "20200101_020001": {"globals": {"file": "../../../outside/dotdot", "size": 9, "sha256": "0" * 64, "md5": "0" * 32}},
        "20200101_020002": {"file": "../../../other-prefix/db/2020-01-01/data"},
    }
    names = []
    for stamp, over in plants.items():
        manifest = planted(template, pg_db, stamp, size=4, **over)
        s3c.put_object(Bucket=bucket, Key=f"{day_dir}/{pg_db}_full_{stamp}.dump.zst", Body=b"data")
        name = f"{pg_db}_full_{stamp}.dump.zst.manifest.json"
        s3c.put_object(Bucket=bucket, Key=f"{day_dir}/{name}", Body=json.dumps(manifest).encode())
        names.append(name)

    result = run_backup(BackupJob.from_params({**params, "prune": True}))
    assert not result.get("failed"), result.get("msg")
    keys = s3_keys(s3c, bucket)
    for key in outside:
        assert key in keys, f"{key} (outside the job's prefix) was deleted"
    for name in names:
        assert f"{day_dir}/{name}" in keys, f"the planted {name} was deleted"
    assert result["deleted"] == []
    for name in names:
        assert [w for w in result["warnings"] if name in w and "ignored" in w], (name, result["warnings"])


# --------------------------------------------------------------------------
# case 8: clock skew


def faketime_cli(offset: str | None, *args: str) -> subprocess.CompletedProcess:
    """The scheduled job as a real process, its clock moved by ``offset`` (libfaketime), or the real clock."""
    prefix = ["faketime", "-f", offset] if offset else []
    return subprocess.run(prefix + cli_argv(*args), env=cli_env(), cwd="/", stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)


def daily_ids(backup_dir) -> list[str]:
    return sorted(n[:-len(".dump.zst.manifest.json")] for n in os.listdir(backup_dir) if n.endswith(".manifest.json"))


def test_clock_a_year_ahead_keeps_the_minimum_and_a_clock_gone_back_deletes_nothing(pg_server, pg_db, tmp_path):
    backup_dir = tmp_path / "backups"
    now = utcnow()
    params = job_params(pg_server, pg_db, backup_dir, weekly="never", retention_daily_days=5)
    seeded = [engine_run({**params, "prune": False}, now=now - days * DAY)["backup"]["id"] for days in (8, 7, 6, 2)]
    config = {k: v for k, v in params.items() if k != "db"}
    config["databases"] = [pg_db]
    path = write_private(str(tmp_path / "backup.json"), json.dumps(config))

    # a year ahead: every earlier backup is past its 5-day window, yet the minimum count (default 3) stays
    ahead = faketime_cli("+365d", "backup", "--config", path)
    assert ahead.returncode == 0, ahead.stderr
    after_ahead = daily_ids(backup_dir)
    future = [i for i in after_ahead if i not in seeded]
    assert len(future) == 1 and future[0] > seeded[-1]
    assert after_ahead == sorted(seeded[2:] + future), ahead.stdout

    # the clock back: the future-dated backup is newer than now, so retention deletes nothing and says why
    back = faketime_cli(None, "backup", "--config", path)
    assert back.returncode == 0, back.stderr  # tonight's backup is made and the run succeeds
    after_back = daily_ids(backup_dir)
    assert len(after_back) == 4 and set(after_ahead) < set(after_back)  # the 6-day-old one would go otherwise
    warning = [line for line in back.stdout.splitlines() if "WARNING" in line and future[0] in line]
    assert warning and "clock" in warning[0] and "nothing deleted" in warning[0].lower(), back.stdout

    # and the future-dated backup is not "latest": a restore takes tonight's, saying what it skipped
    tonight = max(set(after_back) - set(after_ahead))
    plan = run_restore(RestoreJob.from_params({**pg_server.params(pg_db), "backup_dir": str(backup_dir),
                                               "confirm": pg_db}), check_mode=True)
    assert plan["source"]["id"] == tonight, plan.get("msg")
    assert [w for w in plan["warnings"] if future[0] in w and "clock" in w], plan["warnings"]


# --------------------------------------------------------------------------
# case 15: check mode's plan == the run


def test_check_mode_plans_exactly_what_the_run_deletes(pg_server, pg_db, tmp_path, s3_bucket, s3c):
    backup_dir = tmp_path / "backups"
    now = utcnow()
    up = job_params(pg_server, pg_db, backup_dir, s3=s3_bucket, weekly="always", retention_daily_days=30,
                    retention_weekly_days=30)
    down = {**up, "s3": {**s3_bucket, "endpoint_url": f"http://127.0.0.1:{closed_port()}", "max_attempts": 1}}
    for days in (100, 90, 80):
        engine_run({**up, "prune": False}, now=now - days * DAY)
    missed = run_backup(BackupJob.from_params({**down, "prune": False}), now=now - 70 * DAY)  # kept on disk only
    assert missed["failed"] and missed["backup"]["path"]

    plan = engine_run(up, now=now, check_mode=True)["plan"]
    real = engine_run(up, now=now)
    assert real["caught_up"] and [c["id"] for c in real["caught_up"]] == plan["would_upload"]
    assert triples(plan["would_delete"]) == triples(real["deleted"])
    assert len(real["deleted"]) == 8  # 2 sets x daily/weekly x local/S3: the new backup makes the 90-day one go
