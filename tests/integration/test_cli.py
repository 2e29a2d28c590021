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


def test_drill_restores_into_a_scratch_database_and_reports(pg_server, pg_db, tmp_path):
    path = config(tmp_path, pg_server, [pg_db])
    assert run_cli("backup", "--config", path).returncode == 0
    reports = tmp_path / "reports"
    done = run_cli("drill", "--config", path, "--report-dir", str(reports))
    assert done.returncode == 0, done.stderr
    assert f"Restore drill of {pg_db}: success" in done.stdout
    report = read_json(str(reports / f"drill_{pg_db}.json"))
    assert report["status"] == "success" and report["name"] == pg_db and report["source_type"] == "database" and report["rto_s"] > 0
    assert report["tables"]["missing"] == [] and report["tables"]["expected"] == 5
    assert not pg_server.query("SELECT 1 FROM pg_database WHERE datname = %s", (report["scratch_database"],))


# --------------------------------------------------------------------------
# file sets: doctorq-backup files / files-drill / list with a files config


def files_config(tmp_path, sets, mode=0o600, **options) -> str:
    params = {"backup_dir": str(tmp_path / "file-backups"), **options, "sets": sets}
    path = write_private(str(tmp_path / "files.json"), json.dumps(params))
    os.chmod(path, mode)
    return path


def make_dir(root, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as handle:
            handle.write(data)
    return str(root)


def manifests_by_set(backup_dir: str) -> dict[str, dict]:
    found = {}
    for rel in tree(backup_dir):
        if rel.endswith(".manifest.json") and "/" not in rel:
            manifest = read_json(os.path.join(backup_dir, rel))
            found[manifest["name"]] = manifest
    return found


def test_files_backup_list_and_drill_of_every_set(tmp_path, s3_bucket, seaweed):
    uploads = make_dir(tmp_path / "srv" / "uploads", {"a.pdf": os.urandom(50_000), "b/c.txt": b"c\n", "x.tmp": b"t"})
    reports = make_dir(tmp_path / "srv" / "reports", {"r.csv": b"1,2\n", "r.log": b"log\n", "r.tmp": b"t"})
    path = files_config(tmp_path, [
        {"name": "uploads", "paths": [uploads]},  # the shared excludes
        {"name": "reports", "paths": [reports], "exclude": ["*.log"], "on_change": "fail"},  # its own
    ], s3=s3_bucket, exclude=["*.tmp"], weekly="never")
    backups = str(tmp_path / "file-backups")
    client, bucket = seaweed.client(), s3_bucket["bucket"]

    check = run_cli("files", "--config", path, "--check")
    assert check.returncode == 0, check.stderr
    assert check.stdout.count("check mode, nothing is written") == 2
    assert not os.path.exists(backups) and s3_keys(client, bucket) == []

    done = run_cli("files", "--config", path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines and all(re.match(LOG_LINE, line) for line in lines), done.stdout
    assert done.stdout.count("Backup completed successfully") == 2
    made = manifests_by_set(backups)
    assert made["uploads"]["contents"]["exclude"] == ["*.tmp"] and made["uploads"]["contents"]["files"] == 2
    assert made["reports"]["contents"]["exclude"] == ["*.log"] and made["reports"]["contents"]["files"] == 2
    for name, manifest in made.items():
        assert len([k for k in s3_keys(client, bucket, f"postgresql/{name}/") if manifest["id"] in k]) == 4

    listed = run_cli("list", "--config", path, "--verify")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert len(rows) == 4 and all(row.endswith("verified") for row in rows)
    assert {(row.split()[4], row.split()[2]) for row in rows} == \
        {(m["id"], where) for m in made.values() for where in ("local", "s3")}
    only = run_cli("list", "--config", path, "--name", "reports").stdout.splitlines()
    assert len(only) == 2 and all(made["reports"]["id"] in row for row in only)

    out = tmp_path / "drills"
    one = run_cli("files-drill", "--config", path, "--report-dir", str(out), "--name", "uploads")
    assert one.returncode == 0, one.stderr
    assert "Restore drill of file set uploads: success" in one.stdout
    assert sorted(os.listdir(out)) == ["drill_files_uploads.json"]
    every = run_cli("files-drill", "--config", path, "--report-dir", str(out))
    assert every.returncode == 0, every.stderr
    for name, manifest in made.items():
        report = read_json(str(out / f"drill_files_{name}.json"))
        assert report["status"] == "success" and report["backup_id"] == manifest["id"]
        assert report["files"]["found"] == report["files"]["expected"]
        assert not os.path.exists(report["scratch_dir"])
    assert not [n for n in os.listdir(backups) if n.startswith(".drill_")]


def test_files_exit_1_when_a_set_fails_and_the_others_still_run(tmp_path):
    good = make_dir(tmp_path / "srv" / "good", {"a.txt": b"a\n"})
    gone = str(tmp_path / "srv" / "gone")
    path = files_config(tmp_path, [{"name": "gone", "paths": [gone]}, {"name": "good", "paths": [good]}])
    done = run_cli("files", "--config", path)
    assert done.returncode == 1
    assert f"doctorq-backup: gone: {gone} does not exist" in done.stderr
    assert "Backup completed successfully" in done.stdout
    assert set(manifests_by_set(str(tmp_path / "file-backups"))) == {"good"}

    drill = run_cli("files-drill", "--config", path, "--report-dir", str(tmp_path / "drills"))
    assert drill.returncode == 1
    assert "doctorq-backup: gone: no complete backup of file set 'gone'" in drill.stderr
    assert read_json(str(tmp_path / "drills" / "drill_files_good.json"))["status"] == "success"
    assert read_json(str(tmp_path / "drills" / "drill_files_gone.json"))["status"] == "failure"


@pytest.mark.parametrize("problem, expected", [
    ("readable_by_others", "is readable by others (mode 0640)"),
    ("unknown_option_in_a_set", "unknown option sets.exclud"),
    ("paths_shared", "unknown option paths"),
    ("missing_sets", "sets"),
    ("no_name", "set #1 has no name"),
    ("bad_name", "not a usable file-set name"),
    ("duplicate_name", "two sets are named 'app'"),
    ("no_paths", "give paths or a preset"),
    ("bad_policy", "retention_daily_days must be 0"),
    ("bad_part_size", "part_size_mb must be between 5 and 512"),
    ("set_not_listed", "are not in the config's sets"),
])
def test_bad_files_config_exits_2_and_touches_nothing(problem, expected, tmp_path):
    app = make_dir(tmp_path / "srv" / "app", {"a.txt": b"a\n"})
    sets = [{"name": "app", "paths": [app]}]
    options, args = {}, []
    if problem == "unknown_option_in_a_set":
        sets[0]["exclud"] = ["*.tmp"]
    elif problem == "paths_shared":
        options["paths"] = [app]
    elif problem == "no_name":
        del sets[0]["name"]
    elif problem == "bad_name":
        sets[0]["name"] = "weekly"  # reserved; any other name is fine (tests/faults/test_names.py)
    elif problem == "duplicate_name":
        sets.append({"name": "app", "paths": [app]})
    elif problem == "no_paths":
        del sets[0]["paths"]
    elif problem == "bad_policy":
        sets[0]["retention_daily_days"] = -1
    elif problem == "bad_part_size":
        options["s3"] = {"bucket": "b", "part_size_mb": 1}
    elif problem == "set_not_listed":
        args = ["--name", "elsewhere"]
    path = files_config(tmp_path, sets, mode=0o640 if problem == "readable_by_others" else 0o600, **options)
    if problem == "missing_sets":
        data = read_json(path)
        del data["sets"]
        write_private(path, json.dumps(data))
    for command in ("files", "files-drill"):
        done = run_cli(command, "--config", path, *args)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("doctorq-backup: ") and expected in done.stderr, done.stderr
        assert done.stdout == ""
    assert not (tmp_path / "file-backups").exists()


def test_list_says_which_selector_goes_with_which_config(pg_server, pg_db, tmp_path):
    files = files_config(tmp_path, [{"name": "app", "paths": [str(tmp_path)]}])
    done = run_cli("list", "--config", files, "--database", "app")
    assert done.returncode == 2 and "select sets with --name" in done.stderr
    databases = config(tmp_path, pg_server, [pg_db])
    done = run_cli("list", "--config", databases, "--name", "app")
    assert done.returncode == 2 and "select databases with --database" in done.stderr
    done = run_cli("files", "--config", databases)
    assert done.returncode == 2 and "sets" in done.stderr
