"""Old spellings keep working until 1.0.0, through a real ansible-playbook run, and say what to use instead.

Module names: meta/runtime.yml redirects them (and the action group still
covers them). Options: the action plugins translate them (plugins/action/).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml


def play(tmp_path, tasks: list[dict[str, Any]], defaults: dict[str, Any]) -> str:
    """A playbook of ``tasks`` with ``defaults`` for the collection's action group; results land in out.json."""
    out = tmp_path / "out.json"
    tasks = tasks + [{"ansible.builtin.copy": {"content": "{{ results | to_json }}", "dest": str(out), "mode": "0600"}}]
    book = [{"hosts": "localhost", "gather_facts": False,
             "module_defaults": {"group/doctorq.backup.backup": defaults}, "tasks": tasks}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    return str(path)


def register(name: str) -> dict[str, Any]:
    return {"ansible.builtin.set_fact": {"results": f"{{{{ (results | default({{}})) | combine({{'{name}': {name}}}) }}}}"}}


def deprecations(stdout: str) -> str:
    """The deprecation warnings of a run, on one line each (ansible wraps long ones)."""
    return " ".join(stdout.split())


def test_old_module_names_redirect_warn_and_keep_the_group_defaults(ansible_playbook, pg_server, pg_db, tmp_path) -> None:
    backups = tmp_path / "backups"
    conn = {name: f"{{{{ conn.{name} }}}}" for name in pg_server.params(pg_db)}
    tasks = [
        {"doctorq.backup.pg_backup": conn},
        {"doctorq.backup.pg_backup_info": {}, "register": "listed"}, register("listed"),
        {"doctorq.backup.pg_restore_drill": conn, "register": "drilled"}, register("drilled"),
    ]
    run = ansible_playbook(play(tmp_path, tasks, {"backup_dir": str(backups)}), {"conn": pg_server.params(pg_db)})
    assert run.returncode == 0, run.stdout[-4000:]
    results = json.loads((tmp_path / "out.json").read_text())
    # backup_dir came from the group's module_defaults: the old names resolve to modules of the group
    assert [b["database"] for b in results["listed"]["backups"]] == [pg_db]
    assert results["drilled"]["report"]["status"] == "success"
    assert results["drilled"]["report"]["backup_id"] == results["listed"]["backups"][0]["id"]
    text = deprecations(run.stdout + run.stderr)
    for old, new in (("pg_backup_info", "backup_info"), ("pg_restore_drill", "restore_drill")):
        assert re.search(rf"{old} was renamed to doctorq\.backup\.{new} .*use that name\. This feature will be removed "
                         r"from collection 'doctorq\.backup' version 1\.0\.0", text), text[-3000:]


def test_flat_notification_options_move_into_notification_with_a_deprecation(
        ansible_playbook, pg_server, pg_db, tmp_path) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    files = tmp_path / "app"
    files.mkdir()
    (files / "a.txt").write_text("a")
    conn = {name: f"{{{{ conn.{name} }}}}" for name in pg_server.params(pg_db)}
    flat = {"metrics_dir": str(textfile), "notify_on": "never", "webhook_url": "http://127.0.0.1:9/hook"}
    tasks = [
        {"doctorq.backup.pg_backup": {**conn, **flat}},
        {"doctorq.backup.files_backup": {"name": "app", "paths": [str(files)], **flat}},
        {"doctorq.backup.restore_drill": {**conn, **flat}, "register": "drilled"}, register("drilled"),
    ]
    run = ansible_playbook(play(tmp_path, tasks, {"backup_dir": str(tmp_path / "backups")}),
                           {"conn": pg_server.params(pg_db)})
    assert run.returncode == 0, run.stdout[-4000:]
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["drilled"]["report"]["status"] == "success"
    # every run wrote its metrics where the old spelling said, and sent nothing (notify_on=never was read too)
    assert sorted(os.listdir(textfile)) == sorted([f"doctorq_backup_{pg_db}.prom", "doctorq_files_backup_app.prom",
                                                   f"doctorq_drill_{pg_db}.prom"])
    text = deprecations(run.stdout + run.stderr)
    assert "webhook notification failed" not in text
    for module in ("pg_backup", "files_backup", "restore_drill"):
        assert re.search(rf"{module}: old option spellings are read until 1\.0\.0; use the new ones \(webhook_url -> "
                         r"notification\.webhook_url, .*metrics_dir -> notification\.metrics_dir\)", text), text[-3000:]


def test_flat_restore_options_move_into_their_groups_with_a_deprecation(ansible_playbook, pg_server, pg_db,
                                                                        tmp_path) -> None:
    conn = {name: f"{{{{ conn.{name} }}}}" for name in pg_server.params(pg_db)}
    swapped = f"{pg_db}_flat"
    tasks = [
        {"doctorq.backup.pg_backup": conn},
        # a swap over a database that exists: the flat safety_dir and drop_previous are what happens
        {"doctorq.backup.pg_restore_safe": {**conn, "db": swapped, "source_db": pg_db}},
        {"doctorq.backup.pg_restore_safe": {**conn, "db": swapped, "source_db": pg_db, "confirm": swapped,
                                            "safety_dir": str(tmp_path / "safety"), "drop_previous": True,
                                            "wait_timeout": 0, "archive_tier": "Bulk"},
         "register": "restored"}, register("restored"),
        # the flat load options reach the engine: restore_globals asks for the globals this backup lacks
        {"doctorq.backup.pg_restore_safe": {**conn, "db": f"{pg_db}_flatload", "source_db": pg_db,
                                            "restore_globals": True, "no_owner": True, "row_tolerance": 0.5},
         "register": "loaded", "ignore_errors": True}, register("loaded"),
    ]
    run = ansible_playbook(play(tmp_path, tasks, {"backup_dir": str(tmp_path / "backups")}),
                           {"conn": pg_server.params(pg_db)})
    assert run.returncode == 0, run.stdout[-4000:]
    results = json.loads((tmp_path / "out.json").read_text())
    restored = results["restored"]
    assert results["loaded"]["failed"] and "load.globals is set but backup" in results["loaded"]["msg"]
    assert f"{pg_db}_flatload" not in [row[0] for row in pg_server.query("SELECT datname FROM pg_database")]
    assert restored["safety_backup"].startswith(str(tmp_path / "safety") + "/")
    assert "previous_database" in restored
    names = [row[0] for row in pg_server.query("SELECT datname FROM pg_database")]
    assert restored["previous_database"] not in names  # previous.drop
    text = deprecations(run.stdout + run.stderr)
    assert re.search(r"pg_restore_safe: old option spellings are read until 1\.0\.0; use the new ones \(.*"
                     r"wait_timeout -> archive\.wait_timeout.*drop_previous -> previous\.drop.*"
                     r"safety_dir -> safety\.dir\)", text), text[-3000:]
    assert re.search(r"pg_restore_safe: old option spellings are read until 1\.0\.0; use the new ones \(.*"
                     r"restore_globals -> load\.globals, no_owner -> load\.no_owner, row_tolerance -> "
                     r"load\.row_tolerance\)", text), text[-3000:]
