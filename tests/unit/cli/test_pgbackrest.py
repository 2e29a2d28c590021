"""doctorq-pgbackrest's config and pgbackrest_backup's options: one log_dir, one default (no server needed)."""
from __future__ import annotations

import json
import os

import yaml

from ansible_collections.doctorq.backup.cli.pgbackrest import load_config
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import DEFAULT_LOG_DIR
from ansible_collections.doctorq.backup.plugins.module_utils.physical_backup import PhysicalBackupJob
from ansible_collections.doctorq.backup.plugins.modules import pgbackrest_backup

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "pgbackrest")


def config(tmp_path, **options) -> str:
    path = str(tmp_path / "pgbackrest.json")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump({"stanza": "main", **options}, handle)
    return path


def test_log_dir_defaults_to_the_one_shared_directory(tmp_path, capsys):
    params = load_config(config(tmp_path))
    assert params["log_dir"] == DEFAULT_LOG_DIR == "/var/lib/doctorq-backup/pgbackrest"
    assert "backup_dir" not in params and capsys.readouterr().err == ""
    assert PhysicalBackupJob.from_params({**params, "kind": "incremental"}).log_dir == DEFAULT_LOG_DIR
    assert PhysicalBackupJob(kind="incremental").log_dir == DEFAULT_LOG_DIR


def test_backup_dir_is_read_as_log_dir_with_a_warning(tmp_path, capsys):
    params = load_config(config(tmp_path, backup_dir="/srv/pgbr"))
    assert params["log_dir"] == "/srv/pgbr" and "backup_dir" not in params
    err = capsys.readouterr().err
    assert "backup_dir is deprecated and read until 1.0.0: name it log_dir" in err
    # both set: log_dir wins, and the old name still gets its warning
    params = load_config(config(tmp_path, backup_dir="/srv/old", log_dir="/srv/new"))
    assert params["log_dir"] == "/srv/new" and "backup_dir is deprecated" in capsys.readouterr().err


def test_module_option_has_the_same_default_and_the_old_name_as_a_deprecated_alias():
    option = pgbackrest_backup.options()["log_dir"]
    assert option["default"] == DEFAULT_LOG_DIR and option["aliases"] == ["backup_dir"]
    assert option["deprecated_aliases"] == [{"name": "backup_dir", "version": "1.0.0", "collection_name": "doctorq.backup"}]
    assert "backup_dir" not in pgbackrest_backup.options()
    # pg_backup's deprecated physical kinds pass backup_dir (and log_dir) as they always did
    assert PhysicalBackupJob.from_params({"kind": "physical_full", "backup_dir": "/b"}).log_dir == "/b"
    assert PhysicalBackupJob.from_params({"kind": "physical_full", "backup_dir": "/b", "log_dir": "/l"}).log_dir == "/l"


def test_the_role_writes_log_dir_with_the_same_default():
    with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["pgbackrest_job_dir"] == DEFAULT_LOG_DIR
    with open(os.path.join(ROLE, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    assert spec["pgbackrest_job_dir"]["default"] == DEFAULT_LOG_DIR
    with open(os.path.join(ROLE, "vars", "main.yml"), encoding="utf-8") as handle:
        job_config = yaml.safe_load(handle)["_pgbackrest_job_config"]
    assert job_config["log_dir"] == "{{ pgbackrest_job_dir }}" and "backup_dir" not in job_config
