"""doctorq-pgbackrest drill's config: pg_pitr_restore's grouped names, the flat and pitr_* ones read with a warning."""
from __future__ import annotations

import json
import os

from ansible_collections.doctorq.backup.cli.pgbackrest import load_config
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob


def config(tmp_path, **options) -> str:
    path = str(tmp_path / "pgbackrest.json")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump({"stanza": "main", **options}, handle)
    return path


def drill(params) -> PitrJob:
    return PitrJob.from_params({**params, "into": "drill"})


def test_the_drill_reads_the_modules_grouped_names(tmp_path, capsys):
    params = load_config(config(tmp_path, scratch={"dir": "/s", "port": 5999}, timeout=600,
                                drill={"report_dir": "/r", "max_rpo_seconds": 60}))
    job = drill(params)
    assert (job.scratch_dir, job.scratch_port, job.report_dir, job.max_rpo_seconds, job.timeout) == ("/s", 5999, "/r", 60, 600)
    assert job.drill and not job.keep_scratch and job.target == "time" and job.target_time is None
    assert capsys.readouterr().err == ""
    defaults = drill(load_config(config(tmp_path)))
    assert (defaults.scratch_dir, defaults.scratch_port, defaults.max_rpo_seconds, defaults.timeout) == (None, 0, 900, 3600)


def test_old_names_are_read_with_a_warning_naming_the_new_one(tmp_path, capsys):
    params = load_config(config(tmp_path, scratch_dir="/s", scratch_port=5999, report_dir="/r", pitr_max_rpo_seconds=60,
                                pitr_timeout=600))
    job = drill(params)
    assert (job.scratch_dir, job.scratch_port, job.report_dir, job.max_rpo_seconds, job.timeout) == ("/s", 5999, "/r", 60, 600)
    err = capsys.readouterr().err
    for old, new in (("scratch_dir", "scratch.dir"), ("scratch_port", "scratch.port"), ("report_dir", "drill.report_dir"),
                     ("pitr_max_rpo_seconds", "drill.max_rpo_seconds"), ("pitr_timeout", "timeout")):
        assert f"{old} is deprecated and read until 1.0.0: name it {new}" in err, err
