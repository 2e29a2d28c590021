"""The configs of doctorq-backup: their argument specs and old spellings (no server needed)."""
from __future__ import annotations

import json
import os

import pytest

from ansible_collections.doctorq.backup.cli.backup import files_job_spec, load_config, load_files_config
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError


def test_files_config_spec_shares_options_and_leaves_set_options_without_defaults():
    spec = files_job_spec()
    assert not {"name", "paths", "preset"} & set(spec) and spec["sets"]["required"] is True
    per_set = spec["sets"]["options"]
    assert {"name", "paths", "preset", "exclude", "root", "one_file_system", "on_change", "s3"} <= set(per_set)
    assert all("default" not in option for option in per_set.values())
    assert spec["backup_dir"]["default"] == "/var/backups/files"


def _config(tmp_path, content) -> str:
    path = str(tmp_path / "config.json")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(content, handle)
    return path


def test_old_flat_notification_keys_are_read_with_a_warning(tmp_path, capsys):
    params = load_config(_config(tmp_path, {"databases": ["app"], "webhook_url": "https://hook/T0", "notify_on": "failure",
                                            "metrics_dir": "/m"}))
    assert params["notification"] == {"webhook_url": "https://hook/T0", "webhook_format": "slack",
                                      "notify_on": "failure", "metrics_dir": "/m"}
    assert not {"webhook_url", "notify_on", "metrics_dir"} & set(params)
    err = capsys.readouterr().err
    assert err.startswith("doctorq-backup: WARNING: config ") and "notify_on -> notification.notify_on" in err
    assert "https://hook" not in err
    load_config(_config(tmp_path, {"databases": ["app"], "notification": {"webhook_url": "https://hook/T0"}}))
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="unknown option"):
        load_config(_config(tmp_path, {"databases": ["app"], "notification": {"webhook": "https://hook/T0"}}))


def test_a_sets_notification_settings_override_the_shared_ones_one_by_one(tmp_path, capsys):
    sets = load_files_config(_config(tmp_path, {
        "notification": {"webhook_url": "https://hook/T0", "webhook_format": "json"},
        "sets": [{"name": "etc", "paths": ["/etc"], "metrics_dir": "/m"},
                 {"name": "srv", "paths": ["/srv"], "notification": {"notify_on": "never"}},
                 {"name": "opt", "paths": ["/opt"]}]}))
    hook = {"webhook_url": "https://hook/T0", "webhook_format": "json"}
    assert [{k: v for k, v in entry["notification"].items() if v is not None} for entry in sets] == [
        {**hook, "metrics_dir": "/m"}, {**hook, "notify_on": "never"}, hook]
    assert "metrics_dir -> notification.metrics_dir" in capsys.readouterr().err
