"""The database restore job's options without a server: grouped options reach RestoreJob, checked before any work."""
from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob


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
