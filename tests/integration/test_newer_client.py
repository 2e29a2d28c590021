# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client tools newer than the server: PostgreSQL 17's (Debian 13's, scripts/pg-client-newer.sh) on the PostgreSQL 15 server.

- ``compression: zstd`` in a directory backup (pg_dump 16+, ``pg_bin_dir``):
  to disk and SeaweedFS, the files zstd-compressed by pg_dump itself,
  ``sha256sum -c``/``md5sum -c`` pass, pg_restore_safe with the same tools
  restores it from S3 and from disk (pg_restore 17 sets ``transaction_timeout``,
  unknown to the 15 server: that error alone is let through), and so does a
  stock ``pg_restore -j2`` 17, with only that error;
- a backup written by pg_dump 17 (directory or one file) and restored with
  the default tools (pg_restore 15, which cannot read its archive version):
  refused before anything is touched (no safety backup, no new database, the
  target as it was) with the versions and what to do, by pg_restore_safe
  (check mode, a partial restore) and by restore_drill; a manifest that does
  not say which pg_dump wrote it gets the same advice from pg_restore's own
  refusal.

zstd with the 15 tools is refused by test_pg_backup_directory.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

# dbs is a fixture: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, backup, dbs, failed, modify, ok, restore_args,
)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture
def dirs(tmp_path) -> tuple[str, str]:
    """(backup_dir of the host that made the backups, backup_dir of the host that restores)."""
    return str(tmp_path / "backup-host"), str(tmp_path / "restore-host")


def read_manifest(made: dict[str, Any]) -> dict[str, Any]:
    with open(made["path"] + ".manifest.json", encoding="utf-8") as handle:
        return json.load(handle)


def stock_restore(pg_server, dbs, bin_dir: str, path: str) -> str:
    """A stock ``pg_restore -j2`` 17 of the directory into a new database on the 15 server.

    Without ``--exit-on-error``: pg_restore 17 sets ``transaction_timeout`` on each connection, which
    PostgreSQL 15 does not know; that error, and no other, is reported (exit status 1).
    """
    target = dbs.empty(dbs.name("_stock"))
    argv = [os.path.join(bin_dir, "pg_restore"), "-j", "2", "-d", target, path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **pg_server.libpq_env(target)})
    errors = [line for line in done.stderr.splitlines() if line.startswith("pg_restore: error:")]
    assert done.returncode == 1 and errors, done.stderr
    assert all('unrecognized configuration parameter "transaction_timeout"' in line for line in errors), done.stderr
    return target


def test_zstd_directory_backup_by_pg_dump_17_to_disk_and_s3_restores(run_module, pg_server, pg17_bin_dir, table_digest,
                                                                     dbs, dirs, s3_bucket) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket, jobs=2, compression="zstd", compression_level=7,
                  pg_bin_dir=pg17_bin_dir, globals=True)
    manifest = read_manifest(made)
    assert manifest["format"] == "directory" and manifest["jobs"] == 2
    assert (manifest["compression"], manifest["compression_level"], manifest["pg_dump_version"]) == ("zstd", 7, 17)
    names = sorted(os.listdir(made["path"]))
    data = [n for n in names if n != "toc.dat"]
    assert "toc.dat" in names and data and all(n.endswith(".dat.zst") for n in data), names
    for name in data:  # compressed by pg_dump itself, with zstd
        with open(os.path.join(made["path"], name), "rb") as handle:
            assert handle.read(4) == ZSTD_MAGIC, name
    for tool, suffix in (("sha256sum", ".sha256"), ("md5sum", ".md5")):
        done = subprocess.run([tool, "-c", os.path.basename(made["path"]) + suffix], cwd=made_on,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.count(": OK") == len(names), done.stdout + done.stderr
    modify(pg_server, db)

    # from S3, on a host with no local copy, into the live database (swap), the globals (pg_dumpall 17's) by psql 17
    result = ok(run_module(MODULE, restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket, jobs=2,
                                                pg_bin_dir=pg17_bin_dir, load={"globals": True})))
    assert result["source"]["location"] == "s3" and result["source"]["format"] == "directory"
    assert any("transaction_timeout, which PostgreSQL 15" in line for line in result["log"]), result["log"]
    assert table_digest(pg_server, db) == original

    # from disk, into a new database
    copy = dbs.name("_disk")
    ok(run_module(MODULE, restore_args(pg_server, copy, made_on, source=made["path"], pg_bin_dir=pg17_bin_dir)))
    assert table_digest(pg_server, copy) == original

    # stock pg_restore -j2 of PostgreSQL 17
    assert table_digest(pg_server, stock_restore(pg_server, dbs, pg17_bin_dir, made["path"])) == original


@pytest.mark.parametrize("tools", ["pg_dump 17", "pg_dump 15"])
def test_a_directory_backup_without_compression_given_uses_zstd_where_pg_dump_can_else_gzip(
        tools, run_module, pg_server, pg17_bin_dir, table_digest, dbs, dirs) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    original = table_digest(pg_server, db)
    bin_dir = {"pg_bin_dir": pg17_bin_dir} if tools == "pg_dump 17" else {}
    made = backup(run_module, pg_server, db, made_on, jobs=2, globals=True, **bin_dir)  # no compression option
    manifest = read_manifest(made)
    compression, level, suffix = ("zstd", 3, ".zst") if tools == "pg_dump 17" else ("gzip", 6, ".gz")
    assert (manifest["compression"], manifest["compression_level"]) == (compression, level), manifest
    data = [n for n in os.listdir(made["path"]) if n != "toc.dat"]
    assert data and all(n.endswith(".dat" + suffix) for n in data), data
    assert manifest["globals"]["file"].endswith(".sql" + suffix)  # the globals file says the same
    copy = dbs.name("_copy")
    ok(run_module(MODULE, restore_args(pg_server, copy, restore_on, source=made["path"], **bin_dir)))
    assert table_digest(pg_server, copy) == original


def refused(result: dict[str, Any]) -> str:
    """The clear refusal: which pg_dump wrote it, which pg_restore cannot read it, what to do."""
    msg = failed(result)
    assert "pg_dump 17" in msg and "pg_restore 15" in msg, msg
    assert "pg_bin_dir" in msg and "postgresql-client-17" in msg, msg
    return msg


@pytest.mark.parametrize("layout", [{"jobs": 2, "compression": "zstd"}, {"jobs": 1}], ids=["directory_zstd", "one_file"])
def test_backup_by_pg_dump_17_is_refused_by_pg_restore_15_before_anything_is_touched(
        run_module, pg_server, pg17_bin_dir, table_digest, dbs, dirs, s3_bucket, tmp_path, layout) -> None:
    made_on, restore_on = dirs
    db = dbs.sample()
    made = backup(run_module, pg_server, db, made_on, s3=s3_bucket, pg_bin_dir=pg17_bin_dir, **layout)
    assert read_manifest(made)["pg_dump_version"] == 17
    modify(pg_server, db)
    before, names = table_digest(pg_server, db), dbs.mine()

    def untouched() -> None:
        assert table_digest(pg_server, db) == before and dbs.mine() == names
        for backup_dir in (made_on, restore_on):
            assert not os.path.exists(os.path.join(backup_dir, "safety")), backup_dir

    for args in (restore_args(pg_server, db, made_on, confirm=db),
                 restore_args(pg_server, db, restore_on, confirm=db, s3=s3_bucket, mode="replace"),
                 restore_args(pg_server, dbs.name("_new"), made_on, source=made["path"])):
        msg = refused(run_module(MODULE, args))
        assert made["id"] in msg, msg
        untouched()
    refused(run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db), check_mode=True))
    if layout["jobs"] == 1:  # a partial restore reads one-file backups only
        refused(run_module(MODULE, restore_args(pg_server, db, made_on, partial={"tables": ["public.customers"]})))
        untouched()

    drill = run_module("restore_drill", {**pg_server.params(db), "backup_dir": made_on,
                                         "report_dir": str(tmp_path / "reports")})
    report = drill["report"]
    assert report["status"] == "failure" and "pg_dump 17" in report["error"] and "pg_bin_dir" in report["error"], report
    assert "Refused before the restore began" in report["error"], report  # before the scratch database
    untouched()

    # the same backup with the tools that wrote it: restored
    ok(run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db, pg_bin_dir=pg17_bin_dir)))


def test_manifest_without_pg_dump_version_gets_the_same_advice(run_module, pg_server, pg17_bin_dir, table_digest, dbs,
                                                               dirs) -> None:
    """A manifest that does not say which pg_dump wrote the backup: pg_restore's own refusal, explained."""
    made_on = dirs[0]
    db = dbs.sample()
    made = backup(run_module, pg_server, db, made_on, pg_bin_dir=pg17_bin_dir)
    path = made["path"] + ".manifest.json"
    manifest = read_manifest(made)
    del manifest["pg_dump_version"]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    modify(pg_server, db)
    before, names = table_digest(pg_server, db), dbs.mine()

    msg = failed(run_module(MODULE, restore_args(pg_server, db, made_on, confirm=db)))
    assert "pg_restore 15" in msg and "archive version 1.16" in msg and "newer pg_dump" in msg, msg
    assert "pg_bin_dir" in msg, msg
    assert table_digest(pg_server, db) == before and dbs.mine() == names  # the half-restored database is dropped
