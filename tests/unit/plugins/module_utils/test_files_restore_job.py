"""The file-set restore job's options without a server: target and set name checked before any work."""
from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.files_restore_job import FilesRestoreJob


def test_target_and_set_name():
    with pytest.raises(ConfigError, match="target / cannot"):
        FilesRestoreJob.from_params({"name": "app", "target": "/"})
    with pytest.raises(ConfigError, match="file-set name"):
        FilesRestoreJob.from_params({"name": "weekly"})
    with pytest.raises(ConfigError, match="too long for a file-set name"):
        FilesRestoreJob.from_params({"name": "é" * 32})  # 192 characters once encoded
    assert FilesRestoreJob.from_params({"name": "../x"}).name == "../x"  # any name: encoded in file names and keys


def test_grouped_options_reach_the_job():
    job = FilesRestoreJob.from_params({"name": "app", "safety": {"backup": False, "dir": "/s"}, "previous": {"drop": True},
                                       "archive": {"tier": "Bulk"}})
    assert (job.safety_backup, job.safety_dir, job.drop_previous, job.archive.tier) == (False, "/s", True, "Bulk")
    default = FilesRestoreJob.from_params({"name": "app", "safety": None, "previous": None})
    assert (default.safety_backup, default.safety_dir, default.drop_previous) == (True, None, False)
