"""The database restore job's options without a server: grouped options reach RestoreJob, checked before any work."""
from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import module_spec
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, restore_argument_spec


def test_grouped_options_reach_the_job_and_replace_needs_its_safety_backup():
    job = RestoreJob.from_params({"db": "app", "safety": {"backup": False, "dir": "/s"},
                                  "previous": {"drop": True, "retention_days": 7}, "notification": {"notify_on": "never"}})
    assert (job.safety_backup, job.safety_dir, job.drop_previous, job.previous_retention_days) == (False, "/s", True, 7)
    assert job.notifier.notify_on == "never"
    default = RestoreJob.from_params({"db": "app"})
    assert (default.safety_backup, default.drop_previous, default.previous_retention_days) == (True, False, 0)
    assert default.notifier.notify_on == "always"
    with pytest.raises(ConfigError, match=r"mode=replace .* needs safety\.backup=true"):
        RestoreJob.from_params({"db": "app", "mode": "replace", "safety": {"backup": False}})
    with pytest.raises(ConfigError, match=r"previous\.retention_days must not be negative"):
        RestoreJob.from_params({"db": "app", "previous": {"retention_days": -1}})


def test_the_load_option_reaches_the_job_with_the_defaults_of_before():
    job = RestoreJob.from_params({"db": "app", "load": {"globals": True, "no_owner": True, "no_privileges": True,
                                                        "row_tolerance": 0.25}})
    assert (job.restore_globals, job.no_owner, job.no_privileges, job.row_tolerance) == (True, True, True, 0.25)
    for params in ({"db": "app"}, {"db": "app", "load": None},
                   {"db": "app", "load": {"globals": None, "no_owner": None, "row_tolerance": None}}):
        default = RestoreJob.from_params(params)
        assert (default.restore_globals, default.no_owner, default.no_privileges, default.row_tolerance) == (
            False, False, False, 0.1)


def test_the_module_spec_holds_load_and_not_the_flat_options_it_replaced():
    spec = restore_argument_spec()
    assert set(spec["load"]["options"]) == {"globals", "no_owner", "no_privileges", "row_tolerance"}
    assert not {"restore_globals", "no_owner", "no_privileges", "row_tolerance"} & set(spec)
    # pg_restore_safe's whole surface: at most 25 options, the ten connection options included
    assert len(module_spec(spec, db_required=True)) <= 25
