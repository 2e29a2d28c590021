# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 11: a bad option fails before any work, naming the option and the fix.

Each bad input goes through the module as a play would give it. The run must
fail before anything starts: pg_dump never runs (``GatedBin`` records every
call), nothing is written in ``backup_dir`` (no partial dump, no run log, no
lock, no audit line), and the message names the option.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from backup_support import GatedBin


def nothing_in(path: str) -> list[str]:
    """Everything under ``path`` (which may not exist)."""
    return [os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files]


def refused(result: dict[str, Any], *needles: str) -> str:
    assert result.get("failed"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]
    return result["msg"]


BAD_S3 = [
    ({"prefix": "backups/../other"}, ["s3.prefix", ".."]),
    ({"prefix": ".."}, ["s3.prefix", ".."]),
    ({"prefix": "/postgresql"}, ["s3.prefix", "leading '/'"]),
    ({"prefix": "a//b"}, ["s3.prefix"]),
    ({"bucket": ""}, ["s3.bucket", "empty"]),
    ({"bucket": "my bucket"}, ["s3.bucket", "not a valid bucket name"]),
    ({"bucket": "s3://doctorq-backups/postgresql"}, ["s3.bucket", "s3.prefix"]),
    ({"endpoint_url": "localhost:8333"}, ["s3.endpoint_url", "http://"]),
    ({"endpoint_url": "http://"}, ["s3.endpoint_url", "host"]),
    ({"endpoint_url": "ftp://s3.example.test"}, ["s3.endpoint_url", "http"]),
    ({"endpoint_url": "http://s3.example.test:99999"}, ["s3.endpoint_url", "port"]),
]


@pytest.mark.parametrize("change,needles", BAD_S3, ids=[f"{list(c)[0]}={list(c.values())[0]!r}" for c, _n in BAD_S3])
def test_bad_s3_option_fails_before_the_dump(change, needles, pg_server, pg_db, s3_bucket, tmp_path, run_module):
    gated = GatedBin(str(tmp_path), pg_server.bin_dir)
    backup_dir = str(tmp_path / "backups")
    result = run_module("pg_backup", {**pg_server.params(pg_db), "pg_bin_dir": gated.dir, "backup_dir": backup_dir,
                                      "s3": {**s3_bucket, **change}})
    refused(result, *needles)
    assert gated.calls("pg_dump") == []
    assert nothing_in(backup_dir) == []


@pytest.mark.parametrize("module,args", [
    ("pg_backup", {}),
    ("files_backup", {"name": "app", "paths": ["/etc/hostname"]}),
])
def test_negative_compression_threads_fails_before_the_dump(module, args, pg_server, pg_db, tmp_path, run_module):
    gated = GatedBin(str(tmp_path), pg_server.bin_dir)
    backup_dir = str(tmp_path / "backups")
    base = {**pg_server.params(pg_db), "pg_bin_dir": gated.dir} if module == "pg_backup" else {}
    result = run_module(module, {**base, **args, "backup_dir": backup_dir, "compression_threads": -3})
    refused(result, "compression_threads", "0")
    assert gated.calls("pg_dump") == []
    assert nothing_in(backup_dir) == []


BAD_SOURCES = [
    ("s3://{bucket}/postgresql/../elsewhere/x_full_20250101_000000.dump.zst", ["source", ".."]),
    ("s3://{bucket}//postgresql/x_full_20250101_000000.dump.zst", ["source", "'/'"]),
    ("s3:///postgresql/x_full_20250101_000000.dump.zst", ["source", "bucket"]),
    ("s3://{bucket}", ["source", "key"]),
    ("s3://Not A Bucket/postgresql/x_full_20250101_000000.dump.zst", ["source", "bucket"]),
]


@pytest.mark.parametrize("source,needles", BAD_SOURCES, ids=[s for s, _n in BAD_SOURCES])
def test_bad_s3_source_fails_before_the_restore_starts(source, needles, pg_server, pg_db, s3_bucket, tmp_path,
                                                       run_module):
    backup_dir = str(tmp_path / "backups")
    src = source.format(bucket=s3_bucket["bucket"])
    result = run_module("pg_restore_safe", {**pg_server.params(), "db": pg_db + "_restore", "source": src,
                                            "backup_dir": backup_dir, "s3": s3_bucket})
    refused(result, *needles)
    assert nothing_in(backup_dir) == []  # no run log, no audit line: nothing was started
    result = run_module("files_restore", {"source": src, "backup_dir": backup_dir, "target": str(tmp_path / "t"),
                                          "s3": s3_bucket})
    refused(result, *needles)
    assert nothing_in(backup_dir) == [] and not os.path.exists(tmp_path / "t")
