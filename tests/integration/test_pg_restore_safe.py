# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore_safe against the real PostgreSQL, from local backups.

Round trips compare whole-table digests (row count and md5 of every row) of
the restored database with the original. Failure cases assert what must
*not* have happened as well: no database created or renamed, no safety
backup written, the target's digest unchanged. S3 and Glacier are in
test_pg_restore_safe_s3.py, failures midway in test_pg_restore_safe_failures.py.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import secrets
import threading
from typing import Any, Iterator

import psycopg2
import pytest

# backup_dir, dbs and modified_since_backup are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    LOG_LINE, MODULE, backup, backup_at, backup_dir, dbs, failed, files_under, flip_byte, load_manifest, mark, marker,
    modified_since_backup, modify, ok, read_jsonl, restore_args,
)

from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, run_restore


# --------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("jobs", [1, 2], ids=["jobs1-stream", "jobs2-file"])
def test_swap_over_modified_target_round_trip(run_module, pg_server, table_digest, dbs, backup_dir, jobs) -> None:
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    modified = table_digest(pg_server, db)
    assert modified != original and "public.scratch" in modified

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, jobs=jobs)))

    assert result["changed"] is True
    assert table_digest(pg_server, db) == original
    assert result["source"]["id"] == made["id"] and result["source"]["location"] == "local"
    assert result["checksums"] == {"sha256": made["sha256"], "md5": made["md5"], "verified": True}
    assert result["tables"]["expected"] == result["tables"]["found"] == 5
    assert result["tables"]["missing"] == [] and result["tables"]["mismatched"] == []
    # the previous database is kept, with the modified content
    previous = result["previous_database"]
    assert previous.startswith(f"{db}__pre_restore_")
    assert dbs.mine() == sorted([db, previous])
    assert table_digest(pg_server, previous) == modified
    # phases are reported
    assert {"verify", "safety_backup", "restore", "verify_after", "swap"} <= set(result["durations"])
    # nothing left in the work dir (jobs=2 decompresses there)
    work = os.path.join(backup_dir, ".restore-work")
    assert not os.path.isdir(work) or os.listdir(work) == []

    # the safety backup is a complete backup set, and it restores to the modified content
    safety = result["safety_backup"]
    assert safety.startswith(os.path.join(backup_dir, "safety") + os.sep) and os.path.isfile(safety)
    assert load_manifest(safety).name == db
    check = dbs.name("_from_safety")
    ok(run_module(MODULE, restore_args(pg_server, check, backup_dir, source=safety, jobs=jobs)))
    assert table_digest(pg_server, check) == modified


@pytest.mark.parametrize("mode", ["swap", "replace"])
def test_restore_carries_the_database_privileges_and_settings_over(run_module, pg_server, dbs, backup_dir, mode) -> None:
    """What lives on the database itself, not in the dump (GRANT ... ON DATABASE, ALTER DATABASE/ROLE ... SET)."""
    db = dbs.sample()
    role = f"app_{secrets.token_hex(3)}"
    settings_sql = ("SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '-'), s.setconfig "
                    "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s "
                    "ORDER BY 1")
    acl_sql = "SELECT datacl::text FROM pg_database WHERE datname = %s"
    backup(run_module, pg_server, db, backup_dir)
    pg_server.query(f'CREATE ROLE "{role}"; GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO "{role}"; '
                    f"ALTER DATABASE \"{db}\" SET work_mem TO '8MB'; "
                    f"ALTER DATABASE \"{db}\" SET application_name TO 'it''s, {{db}} mine'; "
                    f'ALTER ROLE "{role}" IN DATABASE "{db}" SET search_path TO "$user", "odd, ""name""", public')
    try:
        before = (pg_server.query(settings_sql, (db,)), pg_server.query(acl_sql, (db,)))
        assert len(before[0]) == 2 and role in before[1][0][0]

        result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode=mode)))

        assert (pg_server.query(settings_sql, (db,)), pg_server.query(acl_sql, (db,))) == before
        assert not [w for w in result.get("warnings", []) if "ALTER DATABASE" in w]
    finally:
        for name in dbs.mine():
            pg_server.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg_server.query(f'DROP ROLE IF EXISTS "{role}"')


def test_replace_mode_round_trip(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db = dbs.sample()
    original = table_digest(pg_server, db)
    backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode="replace")))

    assert table_digest(pg_server, db) == original
    assert dbs.mine() == [db]  # dropped and restored in place: nothing beside it
    assert "previous_database" not in result
    assert os.path.isfile(result["safety_backup"])
    assert any("Dropping the existing database" in line for line in result["log"])


def test_restore_into_a_new_database_needs_no_confirmation(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db = dbs.sample()
    original = table_digest(pg_server, db)
    backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    modified = table_digest(pg_server, db)
    copy = dbs.name("_copy")

    result = ok(run_module(MODULE, restore_args(pg_server, copy, backup_dir, source_db=db)))

    assert result["changed"] is True
    assert table_digest(pg_server, copy) == original
    assert table_digest(pg_server, db) == modified  # the source database is not touched
    assert "safety_backup" not in result and result.get("previous_database") is None
    assert not os.path.exists(os.path.join(backup_dir, "safety"))
    assert dbs.mine() == sorted([db, copy])


def test_restore_from_an_explicit_file_path(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db = dbs.sample()
    first = backup_at(pg_server, db, backup_dir, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    first_digest = table_digest(pg_server, db)
    mark(pg_server, db, "newer")
    backup(run_module, pg_server, db, backup_dir)
    target = dbs.name("_old")

    # the manifest path works as well as the data path
    result = ok(run_module(MODULE, restore_args(pg_server, target, backup_dir, source=first["path"] + ".manifest.json")))

    assert result["source"]["id"] == first["id"] and result["source"]["ref"] == first["path"]
    assert table_digest(pg_server, target) == first_digest


# --------------------------------------------------------------------------
# choosing the backup


def test_latest_and_before_selection(run_module, pg_server, dbs, backup_dir) -> None:
    db = dbs.sample()
    now = dt.datetime.now(dt.timezone.utc)
    ids = {}
    for hours, value in ((3, "three hours ago"), (2, "two hours ago"), (1, "one hour ago")):
        mark(pg_server, db, value)
        ids[value] = backup_at(pg_server, db, backup_dir, now - dt.timedelta(hours=hours))["id"]
    mark(pg_server, db, "live")

    newest = dbs.name("_latest")
    result = ok(run_module(MODULE, restore_args(pg_server, newest, backup_dir, source_db=db)))
    assert result["source"]["id"] == ids["one hour ago"]
    assert marker(pg_server, newest) == "one hour ago"

    # `before` picks the newest backup started before that time; ISO with Z, with an offset, or plain UTC
    # `before` picks the newest backup started before that time
    ninety = now - dt.timedelta(minutes=90)
    target = dbs.name("_before")
    result = ok(run_module(MODULE, restore_args(pg_server, target, backup_dir, source_db=db,
                                                before=ninety.strftime("%Y-%m-%dT%H:%M:%SZ"))))
    assert result["source"]["id"] == ids["two hours ago"]
    assert marker(pg_server, target) == "two hours ago"
    # other spellings of a time (check mode: the choice is all that matters): with an offset, or plain UTC
    names = dbs.mine()
    for before, expected in ((ninety.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(), "two hours ago"),
                             ((now - dt.timedelta(minutes=150)).strftime("%Y-%m-%d %H:%M:%S"), "three hours ago")):
        result = ok(run_module(MODULE, restore_args(pg_server, dbs.name("_plan"), backup_dir, source_db=db,
                                                    before=before), check_mode=True))
        assert result["source"]["id"] == ids[expected], before
    assert dbs.mine() == names

    # nothing before the oldest: a clear refusal, nothing created
    msg = failed(run_module(MODULE, restore_args(pg_server, dbs.name("_none"), backup_dir, source_db=db,
                                                 before=(now - dt.timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ"))))
    assert "no complete backup" in msg and "before" in msg
    assert dbs.mine() == names


def test_backup_without_manifest_is_refused(run_module, pg_server, table_digest, dbs, backup_dir,
                                            modified_since_backup) -> None:
    db, made, before = modified_since_backup
    os.unlink(made["path"] + ".manifest.json")
    names = dbs.mine()

    # named explicitly: refused, saying why
    msg = failed(run_module(MODULE, restore_args(pg_server, db, backup_dir, source=made["path"], confirm=db)))
    assert "has no manifest" in msg and "refusing to restore" in msg
    # through `latest`: an unfinished set is not a candidate at all
    msg = failed(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db)))
    assert "no complete backup" in msg
    # a file that is not a backup of ours, with a manifest that is not ours
    stray = os.path.join(backup_dir, "other.dump")
    with open(stray, "wb") as handle:
        handle.write(b"PGDMP")
    with open(stray + ".manifest.json", "w", encoding="utf-8") as handle:
        json.dump({"tool": "something else"}, handle)
    msg = failed(run_module(MODULE, restore_args(pg_server, db, backup_dir, source=stray, confirm=db)))
    assert "not a doctorq.backup manifest" in msg

    assert_untouched(table_digest(pg_server, db) == before, dbs, names, backup_dir)


# --------------------------------------------------------------------------
# refusals that must touch nothing


def assert_untouched(data_unchanged: bool, dbs, names: list[str], backup_dir: str) -> None:
    """A refused restore touched nothing: the data as it was, no database made or renamed, no safety backup taken."""
    assert data_unchanged
    assert dbs.mine() == names  # no __restoring_ database, nothing renamed
    assert not os.path.exists(os.path.join(backup_dir, "safety"))  # refused before the safety backup


def test_corrupted_local_backup_is_refused(run_module, pg_server, table_digest, dbs, backup_dir,
                                           modified_since_backup) -> None:
    db, made, before = modified_since_backup
    flip_byte(made["path"])
    names = dbs.mine()

    # check mode already says so
    msg = failed(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db), check_mode=True))
    assert "checksum mismatch" in msg

    for mode in ("swap", "replace"):
        result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode=mode))
        msg = failed(result)
        assert "checksum mismatch" in msg and made["sha256"] in msg and "not touched" in msg
        assert result["checksums"]["verified"] is False
        assert_untouched(table_digest(pg_server, db) == before, dbs, names, backup_dir)


@pytest.mark.parametrize("confirm", ["", "wrong", "RS_UPPER"], ids=["missing", "wrong", "case"])
def test_wrong_or_missing_confirmation_touches_nothing(run_module, pg_server, table_digest, dbs, backup_dir,
                                                       modified_since_backup, confirm) -> None:
    db, _made, before = modified_since_backup
    names = dbs.mine()
    if confirm == "RS_UPPER":
        confirm = db.upper()

    for mode in ("swap", "replace"):
        args = restore_args(pg_server, db, backup_dir, mode=mode)
        if confirm:
            args["confirm"] = confirm
        result = run_module(MODULE, args)

        msg = failed(result)
        assert f"confirm={db}" in msg, msg  # names what to type
        assert ("does not match" in msg) if confirm else ("no confirmation" in msg)
        assert "Nothing was touched" in msg
        assert result["changed"] is False and "safety_backup" not in result
        assert_untouched(table_digest(pg_server, db) == before, dbs, names, backup_dir)


# --------------------------------------------------------------------------
# check mode


def test_check_mode_touches_nothing_and_reports_the_plan(run_module, pg_server, table_digest, dbs, backup_dir,
                                                         modified_since_backup) -> None:
    db, made, before = modified_since_backup
    names = dbs.mine()
    files = files_under(backup_dir)

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, previous={"drop": True}),
                           check_mode=True))

    assert result["changed"] is True
    assert result["source"]["id"] == made["id"] and result["source"]["ref"] == made["path"]
    assert result["checksums"] == {"sha256": made["sha256"], "md5": made["md5"], "verified": True}
    plan = result["plan"]
    assert plan["target_exists"] is True and plan["confirmation_ok"] is True
    assert plan["archive_state"] == "available" and plan["safety_backup"] is True
    assert plan["restore_into"].startswith(f"{db}__restoring_")
    assert plan["rename_target_to"].startswith(f"{db}__pre_restore_")
    assert plan["drop_previous"] is True
    assert result.get("log_file") is None and result.get("audit_file") is None
    assert all(LOG_LINE.match(line) for line in result["log"])
    # nothing happened
    assert table_digest(pg_server, db) == before
    assert dbs.mine() == names
    assert files_under(backup_dir) == files  # no log, audit, lock, safety backup or work file

    # replace mode and a missing confirmation: the plan says so, still nothing changes
    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, mode="replace"), check_mode=True))
    assert result["plan"]["confirmation_ok"] is False and result["plan"]["drop_and_recreate"] is True
    # a new database: no safety backup, nothing renamed
    new = dbs.name("_new")
    result = ok(run_module(MODULE, restore_args(pg_server, new, backup_dir, source_db=db), check_mode=True))
    assert result["plan"]["target_exists"] is False and "rename_target_to" not in result["plan"]
    assert "safety_backup" not in result["plan"]
    assert dbs.mine() == names and files_under(backup_dir) == files


# --------------------------------------------------------------------------
# sessions, previous databases, globals


@pytest.mark.parametrize("mode", ["swap", "replace"])
def test_open_sessions_on_the_target_are_terminated(run_module, pg_server, table_digest, dbs, backup_dir, mode) -> None:
    db = dbs.sample()
    original = table_digest(pg_server, db)
    backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    idle = pg_server.connect(db)
    busy = pg_server.connect(db)
    busy.autocommit = False
    with busy.cursor() as cur:  # idle in transaction, holding a lock on a table
        cur.execute("LOCK TABLE public.customers IN ACCESS SHARE MODE")
    pids = {idle.get_backend_pid(), busy.get_backend_pid()}
    try:
        result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode=mode)))
        for conn in (idle, busy):
            with pytest.raises(psycopg2.Error):
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
        alive = pg_server.query("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),))
        assert alive == []
        ended = [int(line.rsplit(": ", 1)[1]) for line in result["log"] if f"Active connections terminated on '{db}'" in line]
        assert len(ended) == 1 and ended[0] >= 2, result["log"]
        assert table_digest(pg_server, db) == original
        if mode == "swap":  # the previous database accepts connections again
            pg_server.connect(result["previous_database"]).close()
        pg_server.connect(db).close()
    finally:
        for conn in (idle, busy):
            conn.close()


def test_drop_previous(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db = dbs.sample()
    original = table_digest(pg_server, db)
    backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, previous={"drop": True})))

    assert result["previous_dropped"] is True
    assert result["previous_database"].startswith(f"{db}__pre_restore_")
    assert dbs.mine() == [db]
    assert table_digest(pg_server, db) == original
    assert os.path.isfile(result["safety_backup"])  # the safety backup is still there to go back to


@pytest.mark.parametrize("long_name", [False, True], ids=["short-name", "63-char-derived-names"])
def test_previous_retention_days(run_module, pg_server, table_digest, dbs, backup_dir, long_name) -> None:
    db = dbs.name("_" + "x" * 40) if long_name else dbs.name()
    dbs.sample(db)
    backup(run_module, pg_server, db, backup_dir)
    stem = db[:63 - len("__pre_restore_20200101_000000")]
    old = dbs.empty(f"{stem}__pre_restore_20200101_000000")
    recent = dbs.empty(f"{stem}__pre_restore_{(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)):%Y%m%d_%H%M%S}")
    unrelated = dbs.empty(f"{stem[:-1]}z__pre_restore_20200101_000000")  # another database's previous copy

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db,
                                                previous={"retention_days": 1})))

    previous = result["previous_database"]
    assert len(previous) <= 63 and previous.startswith(stem + "__pre_restore_")
    assert result["pruned_previous"] == [old]
    assert dbs.mine() == sorted([db, previous, recent, unrelated])
    assert any(f"Dropped previous database '{old}'" in line for line in result["log"])


def test_restore_globals_brings_back_a_dropped_role(run_module, pg_server, dbs, backup_dir) -> None:
    db = dbs.sample()
    role = f"rs_role_{dbs.token}"
    pg_server.query(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 7')
    try:
        made = backup(run_module, pg_server, db, backup_dir, globals=True)
        assert made["globals_file"]
        pg_server.query(f'DROP ROLE "{role}"')
        assert not pg_server.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))

        target = dbs.name("_globals")
        result = ok(run_module(MODULE, restore_args(pg_server, target, backup_dir, source_db=db, load={"globals": True})))

        assert pg_server.query("SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = %s", (role,)) == [(True, 7)]
        assert any("Globals restored" in line for line in result["log"])
        assert result.get("warnings", []) == []
    finally:
        pg_server.query(f'DROP ROLE IF EXISTS "{role}"')


def test_restore_globals_without_a_globals_file_is_refused(run_module, pg_server, dbs, backup_dir) -> None:
    db = dbs.sample()
    backup(run_module, pg_server, db, backup_dir)
    names = dbs.mine()
    msg = failed(run_module(MODULE, restore_args(pg_server, dbs.name("_g"), backup_dir, source_db=db, load={"globals": True})))
    assert "no globals file" in msg and "globals: true" in msg
    assert dbs.mine() == names


# --------------------------------------------------------------------------
# log, audit, webhook, secrets


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, "body": json.loads(body)})  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(url with a secret token in its path, list of received POSTs) on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/{secrets.token_hex(12)}"
    yield url, server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_log_audit_and_webhook(run_module, pg_server, dbs, backup_dir, webhook) -> None:
    url, received = webhook
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db,
                                                notification={"webhook_url": url, "webhook_format": "json"})))
    refused = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm="nope",
                                              notification={"webhook_url": url, "webhook_format": "json"}))
    failed(refused)

    # the run log: seed-style timestamped lines, in the file and in the result
    assert os.path.dirname(result["log_file"]) == backup_dir
    with open(result["log_file"], encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines == result["log"]
    assert all(LOG_LINE.match(line) for line in lines), lines
    text = "\n".join(lines)
    for step in ("Checksums verified", "Creating a safety backup", "Restoring into a new database",
                 "Active connections terminated", "Swapped:", "RESTORE COMPLETED SUCCESSFULLY", "Notification sent"):
        assert step in text, step
    assert (os.stat(result["log_file"]).st_mode & 0o777) == 0o600

    # the audit log: one record per run, beside the backups
    assert result["audit_file"] == os.path.join(backup_dir, "restore_audit.jsonl")
    assert (os.stat(result["audit_file"]).st_mode & 0o777) == 0o600
    success, failure = read_jsonl(result["audit_file"])
    assert success["status"] == "success" and success["error"] is None
    assert success["name"] == db and success["source_type"] == "database" and success["mode"] == "swap" and success["who"]
    assert success["source"]["id"] == made["id"]
    assert success["safety_backup"] == result["safety_backup"]
    assert success["previous_database"] == result["previous_database"]
    assert set(success["durations"]) >= {"restore", "swap"}
    assert dt.datetime.strptime(success["at"], "%Y-%m-%dT%H:%M:%SZ") <= dt.datetime.strptime(success["finished_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert failure["status"] == "failure" and "confirm=" in failure["error"] and failure["safety_backup"] is None

    # the webhook: the outcome of both runs
    assert [r["body"]["status"] for r in received] == ["success", "failure"]
    first, second = (r["body"] for r in received)
    assert first["event"] == "restore" and first["name"] == db and first["database"] == db and first["source"]["id"] == made["id"]
    assert second["error"] == failure["error"]


def test_slack_webhook_and_unreachable_webhook(run_module, pg_server, dbs, backup_dir, webhook) -> None:
    url, received = webhook
    db = dbs.sample()
    backup(run_module, pg_server, db, backup_dir)
    # a refused restore is notified too (slack format: one text line)
    failed(run_module(MODULE, restore_args(pg_server, db, backup_dir, notification={"webhook_url": url})))
    assert received[0]["body"]["text"].startswith(f":rotating_light: Restore of {db} ")
    assert "failure" in received[0]["body"]["text"]

    # a webhook that cannot be reached is a warning, never a failed restore
    dead = f"http://127.0.0.1:9/hooks/{secrets.token_hex(12)}"  # port 9 (discard): nothing listens
    result = ok(run_module(MODULE, restore_args(pg_server, dbs.name("_b"), backup_dir, source_db=db,
                                                notification={"webhook_url": dead})))
    assert any("webhook notification failed" in w for w in result["warnings"])
    assert dead not in json.dumps(result)
    assert len(received) == 1


def test_secrets_stay_out_of_results_logs_and_audit(run_module, pg_server, dbs, backup_dir, webhook) -> None:
    url, _received = webhook
    db = dbs.sample()
    backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    secrets_ = [pg_server.password, url]

    # the engine's own result (the module's output is masked by Ansible as well; this is not)
    params = {**restore_args(pg_server, db, backup_dir, confirm=db, notification={"webhook_url": url}), "mode": "swap"}
    engine_result = run_restore(RestoreJob.from_params(params))
    ok(engine_result)
    # a failing run: a wrong password, said in the message without echoing it
    wrong = "Wr0ng-" + secrets.token_hex(8)
    bad = run_module(MODULE, {**restore_args(pg_server, db, backup_dir, confirm=db, notification={"webhook_url": url}),
                              "login_password": wrong})
    assert "authentication failed" in failed(bad)

    texts = [json.dumps(engine_result, default=str), json.dumps(bad, default=str)]
    logs = [name for name in os.listdir(backup_dir) if name.startswith("restore_")]
    assert "restore_audit.jsonl" in logs and len(logs) >= 2
    for name in logs:
        with open(os.path.join(backup_dir, name), encoding="utf-8") as handle:
            texts.append(handle.read())
    assert "authentication failed" in texts[-1] or any("authentication failed" in t for t in texts[2:])
    for text in texts:
        for secret in secrets_ + [wrong]:
            assert secret not in text
