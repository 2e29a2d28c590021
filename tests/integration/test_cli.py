"""doctorq-backup, the scheduled job's entry point, as a real process: exit codes, config checks, commands."""
from __future__ import annotations

import json
import os
import re

import pytest

from backup_support import LOG_LINE, read_json, run_cli, s3_keys, s3_tags, tree, write_private


def config(tmp_path, pg_server, databases, mode=0o600, **options) -> str:
    params = {**pg_server.params(), "backup_dir": str(tmp_path / "backups"), "databases": databases, **options}
    del params["db"]
    path = write_private(str(tmp_path / "backup.json"), json.dumps(params))
    os.chmod(path, mode)
    return path


def test_backup_exit_0_with_seed_style_log_lines(pg_server, pg_db, tmp_path, s3_bucket):
    path = config(tmp_path, pg_server, [pg_db], s3=s3_bucket)
    done = run_cli("backup", "--config", path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines and all(re.match(LOG_LINE, line) for line in lines), done.stdout
    assert lines[-1].endswith("Backup completed successfully")
    manifests = [p for p in tree(str(tmp_path / "backups")) if p.endswith(".manifest.json")]
    assert len(manifests) == 1

    listed = run_cli("list", "--config", path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    backup_id = manifests[0].split(".")[0]
    assert len(rows) == 2 and all(backup_id in row and "daily" in row for row in rows)
    assert {row.split()[2] for row in rows} == {"local", "s3"}


def test_exit_1_when_a_database_fails_and_the_others_still_run(pg_server, pg_db, tmp_path):
    missing = f"{pg_db}_missing"
    path = config(tmp_path, pg_server, [missing, pg_db])
    done = run_cli("backup", "--config", path)
    assert done.returncode == 1
    assert f"doctorq-backup: {missing}: database '{missing}' does not exist" in done.stderr
    assert f"Backup {pg_db} - kind: full" in done.stdout and "Backup completed successfully" in done.stdout
    assert [p for p in tree(str(tmp_path / "backups")) if p.endswith(".manifest.json") and p.startswith(pg_db)]


@pytest.mark.parametrize("problem, expected", [
    ("readable_by_others", "is readable by others (mode 0644)"),
    ("not_json", "is not valid JSON"),
    ("not_an_object", "must hold a JSON object"),
    ("unknown_option", "backup_dri"),
    ("missing_databases", "databases"),
    ("bad_choice", "compression"),
    ("bad_part_size", "part_size_mb must be between 5 and 512"),
    ("database_not_listed", "are not in the config's databases list"),
    ("no_such_file", "cannot read config"),
])
def test_bad_config_exits_2_and_touches_nothing(problem, expected, pg_server, pg_db, tmp_path):
    args = []
    if problem == "readable_by_others":
        path = config(tmp_path, pg_server, [pg_db], mode=0o644)
    elif problem in ("not_json", "not_an_object"):
        path = write_private(str(tmp_path / "backup.json"), "{nope" if problem == "not_json" else "[1, 2]")
    elif problem == "unknown_option":
        path = config(tmp_path, pg_server, [pg_db], backup_dri="/tmp/typo")
    elif problem == "missing_databases":
        path = config(tmp_path, pg_server, [pg_db])
        data = read_json(path)
        del data["databases"]
        write_private(path, json.dumps(data))
    elif problem == "bad_choice":
        path = config(tmp_path, pg_server, [pg_db], compression="lz4")
    elif problem == "bad_part_size":
        path = config(tmp_path, pg_server, [pg_db], s3={"bucket": "b", "part_size_mb": 1})
    elif problem == "database_not_listed":
        path = config(tmp_path, pg_server, [pg_db])
        args = ["--database", "elsewhere"]
    else:
        path = str(tmp_path / "absent.json")
    done = run_cli("backup", "--config", path, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("doctorq-backup: ") and expected in done.stderr, done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "backups").exists()


def test_check_writes_nothing(pg_server, pg_db, tmp_path, s3_bucket, seaweed):
    path = config(tmp_path, pg_server, [pg_db], s3=s3_bucket)
    done = run_cli("backup", "--config", path, "--check")
    assert done.returncode == 0, done.stderr
    assert "check mode" in done.stdout and f"Would write {tmp_path / 'backups'}/{pg_db}_full_" in done.stdout
    assert not (tmp_path / "backups").exists()
    assert s3_keys(seaweed.client(), s3_bucket["bucket"]) == []


def test_promote_weekly_is_idempotent(pg_server, pg_db, tmp_path, s3_bucket, seaweed):
    path = config(tmp_path, pg_server, [pg_db], s3=s3_bucket, weekly="never")
    client, bucket = seaweed.client(), s3_bucket["bucket"]
    weekly_dir = tmp_path / "backups" / "weekly"

    nothing_yet = run_cli("promote-weekly", "--config", path)
    assert nothing_yet.returncode == 1 and "no complete daily backup" in nothing_yet.stderr

    assert run_cli("backup", "--config", path).returncode == 0
    assert not [n for n in os.listdir(weekly_dir) if n.endswith(".manifest.json")]
    first = run_cli("promote-weekly", "--config", path)
    assert first.returncode == 0, first.stderr
    daily = next(p for p in tree(str(tmp_path / "backups")) if p.endswith(".dump.zst"))
    backup_id = daily.split(".")[0]
    assert f"Weekly copy made of {backup_id}" in first.stdout
    assert os.stat(weekly_dir / daily).st_ino == os.stat(tmp_path / "backups" / daily).st_ino
    assert read_json(str(weekly_dir / f"{daily}.manifest.json"))["kind"] == "weekly"
    weekly_keys = s3_keys(client, bucket, f"postgresql/weekly/{pg_db}/")
    assert len(weekly_keys) == 4 and all(backup_id in k for k in weekly_keys)
    assert all(s3_tags(client, bucket, k)["doctorq-backup-kind"] == "weekly" for k in weekly_keys)

    local_before = {k: (v.st_ino, v.st_mtime_ns) for k, v in tree(str(weekly_dir)).items()}
    remote_before = {k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in weekly_keys}
    second = run_cli("promote-weekly", "--config", path)
    assert second.returncode == 0, second.stderr
    assert f"Weekly copy of {backup_id} already present" in second.stdout
    assert {k: (v.st_ino, v.st_mtime_ns) for k, v in tree(str(weekly_dir)).items()} == local_before
    assert {k: client.head_object(Bucket=bucket, Key=k)["ETag"]
            for k in s3_keys(client, bucket, f"postgresql/weekly/{pg_db}/")} == remote_before


def test_list_verify_exits_1_on_a_corrupt_backup(pg_server, pg_db, tmp_path):
    path = config(tmp_path, pg_server, [pg_db])
    assert run_cli("backup", "--config", path).returncode == 0
    good = run_cli("list", "--config", path, "--verify")
    assert good.returncode == 0 and good.stdout.rstrip().endswith("verified")
    data = next(p for p in tree(str(tmp_path / "backups")) if p.endswith(".dump.zst"))
    with open(tmp_path / "backups" / data, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    bad = run_cli("list", "--config", path, "--verify")
    assert bad.returncode == 1
    assert bad.stdout.rstrip().endswith("corrupt")
    assert f"doctorq-backup: {pg_db}: some backups failed verification" in bad.stderr
