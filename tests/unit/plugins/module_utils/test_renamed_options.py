"""The old option spellings: one table, translated for the action plugins and the CLI configs alike."""

from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import ARCHIVE, NOTIFICATION, TABLE, move_options, translate


def test_flat_options_move_into_their_groups_and_the_new_spelling_wins() -> None:
    renamed = {**NOTIFICATION, **ARCHIVE}
    args, moved = move_options({"db": "app", "webhook_url": "https://hook", "notify_on": "failure",
                                "archive_tier": "Bulk", "archive": {"days": 3, "tier": "Expedited"}}, renamed)
    assert args == {"db": "app", "notification": {"webhook_url": "https://hook", "notify_on": "failure"},
                    "archive": {"days": 3, "tier": "Expedited"}}
    assert moved == [("webhook_url", "notification.webhook_url"), ("notify_on", "notification.notify_on"),
                     ("archive_tier", "archive.tier")]
    with pytest.raises(ConfigError, match=r"notification must be a dictionary .*webhook_url is notification\.webhook_url"):
        move_options({"notification": "loud", "webhook_url": "https://hook"}, renamed)


def test_pitr_options_hand_the_task_to_pg_pitr_restore() -> None:
    done = translate("pg_restore_safe", {"login_host": "db1", "db": "app", "pitr_target": "end", "pitr_into": "live",
                                         "pitr_safety_backup": False, "safety_backup": True, "mode": "swap",
                                         "confirm": "main", "stanza": "main"})
    assert done.module == "pg_pitr_restore"
    # pg_restore_safe's own safety_backup (logical) never reaches the recovery: pitr_safety_backup does
    assert done.args == {"login_host": "db1", "db": "app", "confirm": "main", "stanza": "main", "target": "end",
                         "into": "live", "safety_backup": False}
    [note] = done.deprecations
    assert "doctorq.backup.pg_pitr_restore" in note and "pitr_into -> into" in note and "mode (ignored)" in note


def test_physical_kinds_hand_the_task_to_pgbackrest_backup_and_the_rest_is_dropped() -> None:
    done = translate("pg_backup", {"kind": "differential", "stanza": "main", "backup_dir": "/b", "webhook_url": "u"})
    assert (done.module, done.args) == ("pgbackrest_backup", {"kind": "differential", "stanza": "main",
                                                              "backup_dir": "/b", "webhook_url": "u"})
    logical = translate("pg_backup", {"db": "app", "kind": "logical", "stanza": "main"})
    assert (logical.module, logical.args) == ("pg_backup", {"db": "app"})
    assert len(logical.deprecations) == 2 and all("ignored" in note for note in logical.deprecations)


def test_todays_spellings_pass_untouched() -> None:
    args = {"db": "app", "notification": {"notify_on": "never"}, "s3": {"bucket": "b"}}
    for module in (*TABLE, "s3_lifecycle"):
        done = translate(module, args)
        assert (done.module, done.args, done.deprecations) == (module, args, [])


@pytest.mark.parametrize("module", ["pg_backup", "files_backup", "pg_restore_safe", "files_restore", "restore_drill",
                                    "pgbackrest_backup", "pg_pitr_restore"])
def test_every_module_that_notifies_reads_the_flat_notification_options(module) -> None:
    done = translate(module, {"webhook_url": "https://hook", "webhook_format": "json", "notify_on": "never",
                              "metrics_dir": "/m", "notification": {"notify_on": "failure"}})
    assert done.module == module
    assert done.args == {"notification": {"webhook_url": "https://hook", "webhook_format": "json",
                                          "notify_on": "failure", "metrics_dir": "/m"}}
    [note] = done.deprecations
    assert note.startswith(f"{module}: ") and "webhook_url -> notification.webhook_url" in note and "1.0.0" in note


@pytest.mark.parametrize("module", ["pg_restore_safe", "files_restore"])
def test_restores_read_the_flat_archive_options(module) -> None:
    done = translate(module, {"archive_tier": "Bulk", "archive_days": 3, "wait_timeout": 600, "poll_interval": 10})
    assert (done.module, done.args) == (module, {"archive": {"tier": "Bulk", "days": 3, "wait_timeout": 600,
                                                             "poll_interval": 10}})
    [note] = done.deprecations
    assert "archive_tier -> archive.tier" in note and "wait_timeout -> archive.wait_timeout" in note


def test_restores_read_the_flat_previous_options() -> None:
    done = translate("pg_restore_safe", {"drop_previous": True, "previous_retention_days": 7})
    assert done.args == {"previous": {"drop": True, "retention_days": 7}}
    assert "previous_retention_days -> previous.retention_days" in done.deprecations[0]
    assert translate("files_restore", {"drop_previous": True}).args == {"previous": {"drop": True}}


@pytest.mark.parametrize("module", ["pg_restore_safe", "files_restore"])
def test_restores_read_the_flat_safety_options(module) -> None:
    done = translate(module, {"safety_backup": False, "safety_dir": "/s", "safety": {"dir": "/new"}})
    assert done.args == {"safety": {"backup": False, "dir": "/new"}}
    assert "safety_backup -> safety.backup" in done.deprecations[0]


def test_pg_restore_safe_reads_the_flat_load_options() -> None:
    done = translate("pg_restore_safe", {"db": "app", "restore_globals": True, "no_owner": True, "no_privileges": False,
                                         "row_tolerance": 0.2, "load": {"row_tolerance": 0.5}})
    assert (done.module, done.args) == ("pg_restore_safe", {"db": "app", "load": {
        "globals": True, "no_owner": True, "no_privileges": False, "row_tolerance": 0.5}})
    [note] = done.deprecations
    assert note.startswith("pg_restore_safe: old option spellings are read until 1.0.0") and all(
        pair in note for pair in ("restore_globals -> load.globals", "no_owner -> load.no_owner",
                                  "no_privileges -> load.no_privileges", "row_tolerance -> load.row_tolerance"))
    # only pg_restore_safe loads a database dump: the other restore keeps its options as given
    assert translate("files_restore", {"no_owner": True}).args == {"no_owner": True}
