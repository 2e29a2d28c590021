"""doctorq-pgbackrest's config and flags, pgbackrest_backup's options: one log_dir, one default, the level (no server needed)."""
from __future__ import annotations

import json
import os

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.doctorq.backup.cli import pgbackrest as cli
from ansible_collections.doctorq.backup.cli.pgbackrest import load_config
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import DEFAULT_LOG_DIR
from ansible_collections.doctorq.backup.plugins.module_utils.physical_backup import PhysicalBackupJob
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import translate
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
    assert PhysicalBackupJob.from_params({**params, "level": "incr"}).log_dir == DEFAULT_LOG_DIR
    assert PhysicalBackupJob(level="incr").log_dir == DEFAULT_LOG_DIR


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
    assert PhysicalBackupJob.from_params({"level": "full", "backup_dir": "/b"}).log_dir == "/b"
    assert PhysicalBackupJob.from_params({"level": "full", "backup_dir": "/b", "log_dir": "/l"}).log_dir == "/l"


def test_the_role_writes_log_dir_with_the_same_default():
    with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["pgbackrest_job_dir"] == DEFAULT_LOG_DIR
    with open(os.path.join(ROLE, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    assert spec["pgbackrest_job_dir"]["default"] == DEFAULT_LOG_DIR
    with open(os.path.join(ROLE, "vars", "main.yml"), encoding="utf-8") as handle:
        job_config = yaml.safe_load(handle)["_pgbackrest_job_config"]
    assert job_config["log_dir"] == "{{ pgbackrest_job_dir }}" and "backup_dir" not in job_config


def test_the_module_takes_a_level_in_pgbackrest_words_and_no_kind():
    options = pgbackrest_backup.options()
    assert options["level"] == {"type": "str", "default": "incr", "choices": ["full", "diff", "incr"]}
    assert "kind" not in options and len(options) <= 25
    assert PhysicalBackupJob.from_params({}).level == "incr"
    with pytest.raises(cli.ConfigError, match="level 'incremental' is not a physical backup level"):
        PhysicalBackupJob.from_params({"level": "incremental"})


@pytest.mark.parametrize("old,level", [("physical_full", "full"), ("differential", "diff"), ("incremental", "incr")])
def test_the_old_kind_reaches_the_module_as_its_level(old, level):
    """What the action plugin (and a config) does with a task of before: kind=<old word> is level=<new word>."""
    done = translate("pgbackrest_backup", {"kind": old, "stanza": "main"})
    assert done.args == {"level": level, "stanza": "main"}
    assert done.deprecations == ["pgbackrest_backup: old option spellings are read until 1.0.0; use the new ones "
                                 "(kind -> level)."]
    checked = ArgumentSpecValidator(pgbackrest_backup.options()).validate(done.args)
    assert not checked.error_messages and checked.validated_parameters["level"] == level
    assert PhysicalBackupJob.from_params(checked.validated_parameters).level == level


@pytest.fixture(name="ran")
def fixture_ran(monkeypatch):
    """doctorq-pgbackrest backup's job, caught before it would run pgBackRest."""
    jobs = []
    monkeypatch.setattr(cli, "run_physical_backup", lambda job, echo=None: jobs.append(job) or {"changed": True})
    return jobs


def test_cli_backup_takes_level(tmp_path, capsys, ran):
    assert cli.main(["backup", "--level", "diff", "--config", config(tmp_path)]) == 0
    assert [job.level for job in ran] == ["diff"] and capsys.readouterr().err == ""


@pytest.mark.parametrize("old,level", [("physical_full", "full"), ("differential", "diff"), ("incremental", "incr")])
def test_cli_backup_reads_the_old_kind_with_a_warning(tmp_path, capsys, ran, old, level):
    assert cli.main(["backup", "--kind", old, "--config", config(tmp_path)]) == 0
    assert [job.level for job in ran] == [level]
    assert capsys.readouterr().err == (f"doctorq-pgbackrest: WARNING: --kind {old} is deprecated and read until 1.0.0: "
                                       f"use --level {level}\n")


@pytest.mark.parametrize("argv", [["backup"], ["backup", "--level", "full", "--kind", "physical_full"],
                                  ["backup", "--level", "incremental"]])
def test_cli_backup_needs_one_level(tmp_path, capsys, ran, argv):
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--config", config(tmp_path)])
    assert exited.value.code == 2 and not ran and "--level" in capsys.readouterr().err
