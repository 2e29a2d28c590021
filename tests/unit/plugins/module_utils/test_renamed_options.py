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
    for module in (*TABLE, "s3_lifecycle"):
        args = {"name" if module == "backup_info" else "db": "app", "notification": {"notify_on": "never"},
                "s3": {"bucket": "b"}}
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


def test_a_renamed_option_keeps_its_place_and_its_old_values_are_translated() -> None:
    renamed = {"kind": "level", "type": "source_type"}
    values = {"level": {"physical_full": "full", "differential": "diff"}, "source_type": {"files": "file_set"}}
    args, moved = move_options({"stanza": "main", "kind": "differential", "type": "files"}, renamed, values)
    assert args == {"stanza": "main", "level": "diff", "source_type": "file_set"}
    assert moved == [("kind", "level"), ("type", "source_type")]
    # the new spelling wins, and its values are never rewritten (they are checked by the module's choices)
    args, moved = move_options({"kind": "differential", "level": "differential"}, renamed, values)
    assert args == {"level": "differential"} and moved == [("kind", "level")]


@pytest.mark.parametrize("module,old,new", [
    ("pgbackrest_backup", {"kind": "incremental"}, {"level": "incr"}),
    ("backup_info", {"db": "app", "type": "files"}, {"name": "app", "source_type": "file_set"}),
])
def test_the_words_of_before_are_read_until_1_0_0(module, old, new) -> None:
    done = translate(module, old)
    assert (done.module, done.args) == (module, new)
    [note] = done.deprecations
    assert all(f"{o} -> {n}" in note for o, n in zip(old, new)) and "1.0.0" in note


def test_a_physical_kind_given_to_pg_backup_reaches_pgbackrest_backup_as_its_level() -> None:
    handed = translate("pg_backup", {"kind": "physical_full", "stanza": "main"})
    assert handed.module == "pgbackrest_backup" and handed.args == {"kind": "physical_full", "stanza": "main"}
    again = translate(handed.module, handed.args)  # the action plugin of the module that takes it over
    assert again.args == {"level": "full", "stanza": "main"}
