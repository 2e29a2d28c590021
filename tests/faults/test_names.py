# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 3: any name PostgreSQL accepts is backed up, listed and restored, on disk and in S3.

Databases named with non-ASCII letters (``clínica``), a ``/``, quotes,
spaces and a leading ``-``, holding a schema and a table with such names too,
go through pg_backup (disk + SeaweedFS, weekly copy), backup_info and
pg_restore_safe; a file set with such a name through files_backup,
files_restore and its drill. File names and S3 keys carry the name encoded
(ASCII, one path segment, never starting with ``-`` or ``.``); the manifests,
results and messages carry it as it is.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any, Iterator

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, decode_name, encode_name
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, _Restore
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from backup_support import read_json
from testbed import drop_database

SCHEMA = 'sché.ma "q"/x'
TABLE = "tá.ble -y"


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plain(name: str) -> bool:
    """A file name or key segment that any tool takes as it is: ASCII, no '/', no leading '-' or '.'."""
    return name.isascii() and "/" not in name and not name.startswith(("-", "."))


@pytest.fixture
def make_db(pg_server) -> Iterator[Any]:
    made: list[str] = []

    def make(name: str) -> str:
        conn = pg_server.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {ident(name)} TEMPLATE template0 ENCODING 'UTF8'")
        finally:
            conn.close()
        made.append(name)
        pg_server.query(f"CREATE SCHEMA {ident(SCHEMA)}; CREATE TABLE {ident(SCHEMA)}.{ident(TABLE)} "
                        "(id integer PRIMARY KEY, note text); "
                        f"INSERT INTO {ident(SCHEMA)}.{ident(TABLE)} SELECT i, 'ñandú ' || i FROM generate_series(1, 50) i",
                        dbname=name)
        return name

    yield make
    token_dbs = [row[0] for row in pg_server.query("SELECT datname FROM pg_database")
                 if any(name.encode()[:20].decode(errors="ignore") in row[0] for name in made)]
    for name in set(made + token_dbs):
        drop_database(pg_server, name)


def test_encoding_is_reversible_ascii_and_keeps_plain_names():
    for name in ("doctorq", "app_1.x-y", "clínica", "a/b", '-x "q" y', ".hidden", "100%", "東京 db", "weekly"):
        encoded = encode_name(name)
        assert decode_name(encoded) == name
        assert plain(encoded) and all(c.isalnum() or c in "_.-%" for c in encoded), encoded
    assert encode_name("doctorq") == "doctorq" and encode_name("app_1.x-y") == "app_1.x-y"
    assert encode_name("a%20b") != encode_name("a b")  # '%' itself is encoded: no two names share a form


@pytest.mark.parametrize("stem", ["clínica", "a/b", '-x "q" y'])
def test_awkward_database_names_back_up_list_and_restore_from_s3(stem, make_db, pg_server, s3_bucket, seaweed,
                                                                 tmp_path, run_module, table_digest):
    name = make_db(f"{stem} {secrets.token_hex(3)}")
    backup_dir = str(tmp_path / "backups")
    result = ok(run_module("pg_backup", {**pg_server.params(name), "backup_dir": backup_dir, "weekly": "always",
                                         "s3": s3_bucket}))
    made = result["backup"]
    assert made["name"] == name and made["s3_uri"] and made["weekly_s3_uri"]
    assert os.path.dirname(made["path"]) == backup_dir and plain(os.path.basename(made["path"]))
    assert os.path.dirname(result["log_file"]) == backup_dir and plain(os.path.basename(result["log_file"]))
    manifest = read_json(made["path"] + ".manifest.json")
    assert manifest["name"] == name
    assert {(t["schema"], t["name"], t["rows"]) for t in manifest["tables"]} == {(SCHEMA, TABLE, 50)}
    assert name in "\n".join(result["log"])

    client = seaweed.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket["bucket"])["Contents"]]
    assert len(keys) == 8 and all(k.isascii() and all(plain(p) for p in k.split("/")) for k in keys), keys
    data_key = made["s3_uri"].split("/", 3)[3]
    metadata = client.head_object(Bucket=s3_bucket["bucket"], Key=data_key)["Metadata"]
    assert metadata and all(v.isascii() for v in metadata.values())
    s3_manifest = json.loads(client.get_object(Bucket=s3_bucket["bucket"], Key=data_key + ".manifest.json")["Body"].read())
    assert s3_manifest["name"] == name

    listed = ok(run_module("backup_info", {"name": name, "backup_dir": backup_dir, "s3": s3_bucket}))["backups"]
    assert {(b["id"], b["name"], b["kind"], b["location"]) for b in listed} == {
        (made["id"], name, kind, where) for kind in ("daily", "weekly") for where in ("local", "s3")}

    # a new host: nothing on disk, so the restore reads the bucket
    target = name + " r"
    restored = ok(run_module("pg_restore_safe", {**pg_server.params(), "db": target, "source_db": name,
                                                 "backup_dir": str(tmp_path / "new-host"), "s3": s3_bucket}))
    assert restored["source"]["location"] == "s3" and restored["source"]["name"] == name
    assert table_digest(pg_server, target) == table_digest(pg_server, name)
    assert plain(os.path.basename(restored["log_file"]))


def test_long_non_ascii_name_restores_in_place_and_drills(make_db, pg_server, tmp_path, run_module, table_digest):
    name = make_db("ñ" * 25 + secrets.token_hex(4))  # 58 bytes: the derived names must be cut to 63 bytes, not 63 letters
    assert len(name.encode()) == 58
    backup_dir = str(tmp_path / "backups")
    ok(run_module("pg_backup", {**pg_server.params(name), "backup_dir": backup_dir, "weekly": "never"}))
    before = table_digest(pg_server, name)
    restored = ok(run_module("pg_restore_safe", {**pg_server.params(), "db": name, "confirm": name,
                                                 "backup_dir": backup_dir}))
    previous = restored["previous_database"]
    assert previous.endswith("__pre_restore_" + restored["log_file"][-19:-4]) and len(previous.encode()) <= 63
    assert pg_server.query("SELECT 1 FROM pg_database WHERE datname = %s", (previous,)) == [(1,)]
    assert table_digest(pg_server, name) == before == table_digest(pg_server, previous)
    assert os.path.isfile(restored["safety_backup"])

    report = ok(run_module("restore_drill", {**pg_server.params(), "db": name, "backup_dir": backup_dir,
                                             "report_dir": str(tmp_path / "reports")}))["report"]
    assert report["status"] == "success" and report["name"] == name
    assert len(report["scratch_database"].encode()) <= 63
    assert read_json(report["report_file"])["name"] == name
    assert os.path.dirname(report["report_file"]) == str(tmp_path / "reports")


def test_file_set_with_an_awkward_name_backs_up_restores_and_drills(s3_bucket, tmp_path, run_module):
    name = "fotos clínica/2025 -x"
    app = tmp_path / "app"
    app.mkdir()
    (app / "é.txt").write_text("ñandú\n")
    backup_dir = str(tmp_path / "files")
    made = ok(run_module("files_backup", {"name": name, "paths": [str(app)], "backup_dir": backup_dir,
                                          "s3": s3_bucket, "weekly": "never"}))["backup"]
    assert made["s3_uri"] and os.path.dirname(made["path"]) == backup_dir and plain(os.path.basename(made["path"]))
    assert read_json(made["path"] + ".manifest.json")["name"] == name
    listed = ok(run_module("backup_info", {"name": name, "source_type": "file_set", "backup_dir": backup_dir,
                                           "s3": s3_bucket}))["backups"]
    assert {(b["name"], b["location"]) for b in listed} == {(name, "local"), (name, "s3")}
    target = tmp_path / "restored"
    restored = ok(run_module("files_restore", {"name": name, "backup_dir": str(tmp_path / "new-host"),
                                               "s3": s3_bucket, "target": str(target)}))
    assert restored["source"]["location"] == "s3" and restored["source"]["name"] == name
    assert (target / "é.txt").read_text() == "ñandú\n"
    report = ok(run_module("restore_drill", {"file_set": name, "backup_dir": backup_dir,
                                             "report_dir": str(tmp_path / "reports")}))["report"]
    assert report["status"] == "success" and report["file_set"] == name
    assert os.path.dirname(report["report_file"]) == str(tmp_path / "reports")


def test_verification_after_restore_names_tables_by_schema_and_name(make_db, pg_server):
    """A table too big for an exact count is checked by its estimate: a '.' in the schema must not split it wrongly."""
    name = make_db(f"verify {secrets.token_hex(3)}")
    conn = PgConn.from_params({**pg_server.params(), "db": None})
    restore = _Restore(RestoreJob(conn=conn, db=name), None)
    manifest = Manifest(id="x", name=name, kind="daily", started_at="2025-01-01T00:00:00Z",
                        finished_at="2025-01-01T00:00:00Z", duration_s=0, file="x", size=0, sha256="", md5="",
                        compression="zstd", compression_level=3,
                        tables=[{"schema": SCHEMA, "name": TABLE, "rows": None, "rows_estimate": 50}])
    with PgClient(conn) as pg:
        report = restore.verify_restored(pg, name, manifest, RunLog())
    assert report["missing"] == [] and report["mismatched"] == [] and report["found"] == 1


def as_written_before_0_2(made: dict[str, Any], name: str) -> str:
    """Rename a backup set to the names versions before 0.2 gave it (the database's name as it is); its new path."""
    directory, encoded = os.path.dirname(made["path"]), encode_name(name)
    manifest = read_json(made["path"] + ".manifest.json")
    for field in ("id", "file"):
        manifest[field] = manifest[field].replace(encoded, name, 1)
    for suffix in ("", ".md5", ".sha256", ".manifest.json"):
        os.rename(made["path"] + suffix, os.path.join(directory, manifest["file"] + suffix))
    for suffix in (".md5", ".sha256"):
        path = os.path.join(directory, manifest["file"] + suffix)
        with open(path, encoding="utf-8") as handle:
            line = handle.read().replace(os.path.basename(made["path"]), manifest["file"])
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(line)
    with open(os.path.join(directory, manifest["file"] + ".manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    return os.path.join(directory, manifest["file"])


@pytest.mark.parametrize("stem", ["clínica", "my db"])
def test_backups_named_as_before_0_2_stay_listed_and_restorable(stem, make_db, pg_server, tmp_path, run_module,
                                                                table_digest):
    name = make_db(f"{stem} {secrets.token_hex(3)}")
    backup_dir = str(tmp_path / "backups")
    made = ok(run_module("pg_backup", {**pg_server.params(name), "backup_dir": backup_dir, "weekly": "never"}))["backup"]
    old_path = as_written_before_0_2(made, name)
    assert os.path.basename(old_path).startswith(name)

    listed = ok(run_module("backup_info", {"name": name, "backup_dir": backup_dir, "verify": True}))
    assert [(b["file"], b["location"]) for b in listed["backups"]] == [(os.path.basename(old_path), "local")]
    assert not [w for w in listed.get("warnings") or [] if "ignored" in w], listed["warnings"]

    target = name + " r"
    restored = ok(run_module("pg_restore_safe", {**pg_server.params(), "db": target, "source_db": name,
                                                 "backup_dir": backup_dir}))
    assert restored["source"]["ref"] == old_path
    assert table_digest(pg_server, target) == table_digest(pg_server, name)
