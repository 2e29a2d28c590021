"""SQL text for whole databases (pg_admin.py): names within 63 bytes, literals, settings, conninfo."""
from __future__ import annotations

from ansible_collections.doctorq.backup.plugins.module_utils.pg_admin import (
    MAX_IDENT, conninfo_db, derived_db_name, guc_value, split_guc_list, sql_literal,
)


def test_derived_name_fits_63_bytes_and_cuts_between_characters():
    assert derived_db_name("shop", "__restoring_20251107_020000") == "shop__restoring_20251107_020000"
    long = "clínica" * 10  # 'í' is two bytes: a cut by bytes could split it
    name = derived_db_name(long, "__drill_20251107_020000")
    assert len(name.encode("utf-8")) <= MAX_IDENT
    assert name.endswith("__drill_20251107_020000") and long.startswith(name[:-len("__drill_20251107_020000")])
    name.encode("utf-8").decode("utf-8")  # whole characters only


def test_sql_literal_doubles_quotes():
    assert sql_literal("it's") == "'it''s'"


def test_conninfo_db_cannot_smuggle_options():
    assert conninfo_db("x' host=evil") == "dbname='x\\' host=evil'"
    assert conninfo_db("a\\b") == "dbname='a\\\\b'"


def test_list_settings_come_back_as_one_literal_per_element():
    assert split_guc_list('"$user", public') == ["$user", "public"]
    assert split_guc_list('"a ""quoted"", one", b') == ['a "quoted", one', "b"]
    assert guc_value("search_path", '"$user", public') == "'$user', 'public'"
    assert guc_value("Search_Path", "app") == "'app'"


def test_plain_settings_are_one_literal_even_with_commas():
    assert guc_value("application_name", "a, b") == "'a, b'"
    assert guc_value("search_path", "") == "''"
