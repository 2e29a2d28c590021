# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_toc: a real ``pg_restore -l -v`` listing (the test sample, PostgreSQL 15) parsed and selected from."""

from __future__ import annotations

from ansible_collections.doctorq.backup.plugins.module_utils import pg_toc

LISTING = """;
; Archive created at 2026-12-03 02:24:55 UTC
; Selected TOC Entries:
;
3401; 0 0 ENCODING - ENCODING
6; 2615 31670 SCHEMA - billing postgres
7; 2615 31671 SCHEMA - my schema postgres
222; 1259 31726 SEQUENCE public invoice_number_seq postgres
223; 1259 31727 TABLE billing invoices postgres
;\tdepends on: 222 6
216; 1259 31672 TABLE public customers postgres
220; 1259 31695 TABLE public orders postgres
225; 1259 31800 TABLE my schema odd name postgres
;\tdepends on: 7
215; 1259 31671 SEQUENCE public customers_id_seq postgres
;\tdepends on: 216
3405; 0 0 SEQUENCE OWNED BY public customers_id_seq postgres
;\tdepends on: 215
3221; 2604 31675 DEFAULT public customers id postgres
;\tdepends on: 216 215 216
3398; 0 31727 TABLE DATA billing invoices postgres
;\tdepends on: 223
3391; 0 31672 TABLE DATA public customers postgres
;\tdepends on: 216
3395; 0 31695 TABLE DATA public orders postgres
;\tdepends on: 220
3407; 0 0 SEQUENCE SET public customers_id_seq postgres
;\tdepends on: 215
3408; 0 0 SEQUENCE SET public invoice_number_seq postgres
;\tdepends on: 222
3242; 2606 31734 CONSTRAINT billing invoices invoices_pkey postgres
;\tdepends on: 223
3230; 2606 31680 CONSTRAINT public customers customers_pkey postgres
;\tdepends on: 216
3235; 1259 31708 INDEX public orders_customer_id_idx postgres
;\tdepends on: 220
3246; 2606 31735 FK CONSTRAINT billing invoices invoices_order_id_fkey postgres
;\tdepends on: 223 3238 220
3243; 2606 31703 FK CONSTRAINT public orders orders_customer_id_fkey postgres
;\tdepends on: 220 3230 216
"""


def labels(toc, selection):
    return [e.label for e in toc if e.id in selection.ids]


def test_parse_reads_kinds_of_several_words_namespaces_with_spaces_and_dependencies():
    toc = {e.id: e for e in pg_toc.parse(LISTING)}
    assert (toc[3405].desc, toc[3405].namespace, toc[3405].tag) == ("SEQUENCE OWNED BY", "public", "customers_id_seq")
    assert (toc[225].desc, toc[225].namespace, toc[225].tag, toc[225].deps) == ("TABLE", "my schema", "odd name", [7])
    assert (toc[6].namespace, toc[6].tag) == ("-", "billing")
    assert toc[3246].deps == [223, 3238, 220] and toc[3246].tag == "invoices invoices_order_id_fkey"


def test_a_table_brings_its_sequence_default_data_and_keys_and_skips_a_foreign_key_to_a_table_left_out():
    toc = pg_toc.parse(LISTING)
    selection, missing = pg_toc.select(toc, ["customers", "orders"], [])
    assert missing == [] and selection.tables == [("public", "customers"), ("public", "orders")]
    assert labels(toc, selection) == [
        "TABLE public.customers", "TABLE public.orders", "SEQUENCE public.customers_id_seq",
        "SEQUENCE OWNED BY public.customers_id_seq", "DEFAULT public.customers id", "TABLE DATA public.customers",
        "TABLE DATA public.orders", "SEQUENCE SET public.customers_id_seq", "CONSTRAINT public.customers customers_pkey",
        "INDEX public.orders_customer_id_idx", "FK CONSTRAINT public.orders orders_customer_id_fkey"]
    alone, _missing = pg_toc.select(toc, ["public.orders"], [])
    assert "FK CONSTRAINT public.orders orders_customer_id_fkey" not in labels(toc, alone)
    assert alone.skipped == ["FK CONSTRAINT public.orders orders_customer_id_fkey (needs CONSTRAINT public.customers "
                             "customers_pkey, TABLE public.customers, not restored)"]
    assert pg_toc.use_list(toc, alone).splitlines()[0] == "220; 1259 31695 TABLE public orders postgres"


def test_a_schema_brings_its_schema_and_the_sequence_its_table_names():
    toc = pg_toc.parse(LISTING)
    selection, missing = pg_toc.select(toc, [], ["billing"])
    assert missing == [] and selection.tables == [("billing", "invoices")]
    assert labels(toc, selection) == [
        "SCHEMA billing", "SEQUENCE public.invoice_number_seq", "TABLE billing.invoices", "TABLE DATA billing.invoices",
        "SEQUENCE SET public.invoice_number_seq", "CONSTRAINT billing.invoices invoices_pkey"]
    assert [s.split(" (")[0] for s in selection.skipped] == ["FK CONSTRAINT billing.invoices invoices_order_id_fkey"]
    spaced, missing = pg_toc.select(toc, ["my schema.odd name"], [])
    assert missing == [] and spaced.tables == [("my schema", "odd name")]


def test_what_is_missing_is_named_with_what_the_backup_has():
    toc = pg_toc.parse(LISTING)
    selection, missing = pg_toc.select(toc, ["public.ordres", "billing.invoices"], ["nope"])
    assert selection.ids == [] and missing == ["table public.ordres", "schema nope"]
    msg = pg_toc.missing_message(toc, missing, "db_full_x")
    assert "not in backup db_full_x: table public.ordres, schema nope" in msg
    assert "did you mean public.orders?" in msg and "billing.invoices" in msg and "Nothing was created" in msg
