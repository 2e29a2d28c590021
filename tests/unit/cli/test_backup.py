"""The files config of doctorq-backup: its argument spec (no server needed)."""
from __future__ import annotations

from ansible_collections.doctorq.backup.cli.backup import files_job_spec


def test_files_config_spec_shares_options_and_leaves_set_options_without_defaults():
    spec = files_job_spec()
    assert not {"name", "paths", "preset"} & set(spec) and spec["sets"]["required"] is True
    per_set = spec["sets"]["options"]
    assert {"name", "paths", "preset", "exclude", "root", "one_file_system", "on_change", "s3"} <= set(per_set)
    assert all("default" not in option for option in per_set.values())
    assert spec["backup_dir"]["default"] == "/var/backups/files"
