# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore_safe ``partial``: yesterday's version of one table (or schema) into a new database, on the real server.

Every test asserts what must not have happened too: the live database's
digest unchanged, no database created when the run is refused, no safety
backup written.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

# backup_dir and dbs are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, backup, backup_at, backup_dir, dbs, failed, modify, ok, read_jsonl, restore_args,
)


def yesterday_and_today(pg_server, table_digest, dbs, backup_dir) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A sample database backed up yesterday, changed (``modify``), backed up again today: (db, digests, yesterday's backup)."""
    db = dbs.sample()
    now = dt.datetime.now(dt.timezone.utc)
    made = backup_at(pg_server, db, backup_dir, now - dt.timedelta(days=1))
    original = table_digest(pg_server, db)
    modify(pg_server, db)
    backup_at(pg_server, db, backup_dir, now - dt.timedelta(minutes=1))
    return db, {"original": original, "modified": table_digest(pg_server, db)}, made


def names(pg_server, db: str, sql: str) -> list[str]:
    return sorted(r[0] for r in pg_server.query(sql, dbname=db))


def test_one_table_from_yesterday_into_a_new_database(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db, digest, made = yesterday_and_today(pg_server, table_digest, dbs, backup_dir)
    assert digest["modified"]["public.order_items"] != digest["original"]["public.order_items"]
    target = dbs.name("_items")
    before = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    args = restore_args(pg_server, db, backup_dir, before=before,
                        partial={"tables": ["public.order_items"], "target_db": target})

    plan = ok(run_module(MODULE, args, check_mode=True))
    assert plan["plan"]["create"] == target and plan["plan"]["partial"]["restored_tables"] == ["public.order_items"]
    assert dbs.mine() == [db]

    result = ok(run_module(MODULE, args))

    assert result["changed"] is True and result["mode"] == "partial"
    assert result["source"]["id"] == made["id"] and result["checksums"]["verified"] is True
    # the target holds yesterday's rows of that one table, with its primary key; the live database is as it was
    assert table_digest(pg_server, target) == {"public.order_items": digest["original"]["public.order_items"]}
    assert table_digest(pg_server, db) == digest["modified"]
    assert "order_items_pkey" in names(pg_server, target, "SELECT conname FROM pg_constraint WHERE contype = 'p'")
    partial = result["partial"]
    assert partial["target_db"] == target and partial["live_database_touched"] is False
    assert partial["safety_backup"] == "not needed" and "safety_backup" not in result
    rows = digest["original"]["public.order_items"][0]
    assert partial["rows"] == {"public.order_items": rows} and result["tables"]["found"] == 1
    # the foreign keys to orders and products, not restored, are left out and said so
    skipped = " ".join(partial["skipped"])
    assert "order_items_order_id_fkey" in skipped and "order_items_product_id_fkey" in skipped
    assert any("order_items_product_id_fkey" in w for w in result.get("warnings", []))
    assert any("no safety backup" in line for line in result["log"])
    assert not os.path.exists(os.path.join(backup_dir, "safety"))
    audit = read_jsonl(os.path.join(backup_dir, "restore_audit.jsonl"))[-1]
    assert audit["status"] == "success" and audit["mode"] == "partial" and audit["name"] == db
    assert audit["partial"]["tables"] == ["public.order_items"] and audit["partial"]["target_db"] == target
    assert audit["safety_backup"] is None
    assert sorted(dbs.mine()) == sorted([db, target])


def test_one_schema_with_the_sequence_its_table_uses(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db, digest, _made = yesterday_and_today(pg_server, table_digest, dbs, backup_dir)
    pg_server.query("DELETE FROM billing.invoices WHERE id % 2 = 0", dbname=db)
    live = table_digest(pg_server, db)
    target = dbs.name("_billing")

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir,
                                                partial={"schemas": ["billing"], "target_db": target})))

    # the newest backup (today's, before the delete) of the whole schema
    assert table_digest(pg_server, target) == {"billing.invoices": digest["modified"]["billing.invoices"]}
    assert table_digest(pg_server, db) == live
    assert names(pg_server, target, "SELECT sequencename FROM pg_sequences") == ["invoice_number_seq"]
    assert result["partial"]["restored_tables"] == ["billing.invoices"]
    assert any("invoices_order_id_fkey" in line for line in result["partial"]["skipped"])


def test_a_missing_table_fails_before_anything_is_created(run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db, digest, _made = yesterday_and_today(pg_server, table_digest, dbs, backup_dir)
    target = dbs.name("_typo")

    msg = failed(run_module(MODULE, restore_args(pg_server, db, backup_dir,
                                                 partial={"tables": ["public.ordres"], "schemas": ["nope"],
                                                          "target_db": target})))

    assert "table public.ordres" in msg and "schema nope" in msg and "did you mean public.orders?" in msg
    assert "public.customers" in msg and "Nothing was created" in msg
    assert dbs.mine() == [db] and table_digest(pg_server, db) == digest["modified"]
    audit = read_jsonl(os.path.join(backup_dir, "restore_audit.jsonl"))[-1]
    assert audit["status"] == "failure" and audit["mode"] == "partial" and "public.ordres" in audit["error"]


def test_an_existing_target_db_is_refused_whatever_confirm_says(
        run_module, pg_server, table_digest, dbs, backup_dir) -> None:
    db, digest, _made = yesterday_and_today(pg_server, table_digest, dbs, backup_dir)
    target = dbs.empty(dbs.name("_taken"))
    pg_server.query("CREATE TABLE keep (x int); INSERT INTO keep VALUES (7)", dbname=target)

    msg = failed(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=target,
                                                 partial={"tables": ["orders"], "target_db": target})))

    assert f"{target!r} exists" in msg and "Nothing was touched" in msg
    assert table_digest(pg_server, target) == {"public.keep": table_digest(pg_server, target)["public.keep"]}
    assert pg_server.query("SELECT x FROM keep", dbname=target) == [(7,)]
    assert table_digest(pg_server, db) == digest["modified"]
    into_live = restore_args(pg_server, db, backup_dir, partial={"tables": ["orders"], "target_db": db})
    assert "the live one" in failed(run_module(MODULE, into_live))


def test_one_table_from_s3(run_module, pg_server, table_digest, dbs, tmp_path, s3_bucket) -> None:
    made_on, restore_on = str(tmp_path / "backup-host"), str(tmp_path / "restore-host")
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket)
    modify(pg_server, db)
    target = dbs.name("_s3")

    result = ok(run_module(MODULE, restore_args(pg_server, db, restore_on, s3=s3_bucket,
                                                partial={"tables": ["orders", "customers"], "target_db": target})))

    assert result["source"]["location"] == "s3" and result["source"]["id"] == made["id"]
    assert table_digest(pg_server, target) == {k: original[k] for k in ("public.customers", "public.orders")}
    # both tables restored: the foreign key between them comes along
    assert names(pg_server, target, "SELECT conname FROM pg_constraint WHERE contype = 'f'") == ["orders_customer_id_fkey"]
    assert os.listdir(os.path.join(restore_on, ".restore-work")) == []  # the download is removed
