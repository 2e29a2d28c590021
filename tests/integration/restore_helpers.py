# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of the pg_restore_safe integration tests (imported by test_pg_restore_safe*.py).

The moto pieces (``moto_restores``, ``GlacierObject``) drive an archive-tier
retrieval step by step for the database and the file-set restores alike (see
test_pg_restore_safe_s3.py for how moto signals each state).

Databases made here have short names (``rs_<token>``) so that the restore's
derived names (``<db>__pre_restore_<stamp>``, 29 more characters) are never
truncated and keep the token; the ``dbs`` fixture drops every database whose
name holds the token, however a test ended. ``modified_since_backup`` is
the starting point of most restore tests: a database changed since its
backup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import subprocess
import threading
import time
import urllib.request
from typing import Any, Callable, Iterator, NamedTuple

import pytest

from testbed import PgServer, drop_database

from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, checksum_line
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgConn
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config

MODULE = "pg_restore_safe"
FROZEN = 10 ** 9
LOG_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] ")


class Dbs:
    """Makes databases for one test and knows which ones are its own."""

    def __init__(self, pg_server: PgServer, template: str) -> None:
        self.pg = pg_server
        self.template = template
        self.token = secrets.token_hex(4)
        self.count = 0

    def name(self, tail: str = "") -> str:
        self.count += 1
        return f"rs_{self.token}_{self.count}{tail}"

    def sample(self, name: str | None = None) -> str:
        """A new database holding the conftest sample (~3,700 rows in 5 tables)."""
        name = name or self.name()
        assert self.token in name
        self.pg.query(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def empty(self, name: str) -> str:
        assert self.token in name
        self.pg.query(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def mine(self) -> list[str]:
        """Every database of this test, sorted."""
        rows = self.pg.query("SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0", (self.token,))
        return sorted(r[0] for r in rows)

    def drop_all(self) -> None:
        for name in self.mine():
            drop_database(self.pg, name)


@pytest.fixture
def dbs(pg_server: PgServer, _sample_template: str) -> Iterator[Dbs]:
    made = Dbs(pg_server, _sample_template)
    yield made
    made.drop_all()


def modify(pg_server: PgServer, db: str) -> None:
    """Change the sample the way a bad deploy would: rows gone, rows changed, a table added."""
    pg_server.query(
        "DELETE FROM public.order_items WHERE order_id % 3 = 0;"
        "UPDATE public.customers SET city = 'Nowhere' WHERE id <= 20;"
        "CREATE TABLE public.scratch (x int); INSERT INTO public.scratch VALUES (1), (2);",
        dbname=db)


def mark(pg_server: PgServer, db: str, value: str) -> None:
    """Record value in the database, so a restore shows which backup it came from."""
    pg_server.query("CREATE TABLE IF NOT EXISTS public.marker (v text); DELETE FROM public.marker;"
                    "INSERT INTO public.marker VALUES (%s)", (value,), dbname=db)


def marker(pg_server: PgServer, db: str) -> str:
    return pg_server.query("SELECT v FROM public.marker", dbname=db)[0][0]


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def failed(result: dict[str, Any]) -> str:
    assert result.get("failed"), json.dumps(result, default=str)[:3000]
    return result["msg"]


def backup(run_module: Callable, pg_server: PgServer, db: str, backup_dir: str, s3: dict[str, Any] | None = None,
           **extra: Any) -> dict[str, Any]:
    """A backup with the pg_backup module; returns its ``backup`` result (path, s3_uri, id, ...)."""
    args: dict[str, Any] = {**pg_server.params(db), "backup_dir": backup_dir, "weekly": "never", **extra}
    if s3:
        args["s3"] = s3
    return ok(run_module("pg_backup", args))["backup"]


@pytest.fixture
def backup_dir(tmp_path) -> str:
    return str(tmp_path / "backups")


class Modified(NamedTuple):
    db: str
    backup: dict[str, Any]  # the pg_backup result's ``backup``
    digest: dict[str, Any]  # table_digest of the database as modified: what a refused or failed restore must leave


@pytest.fixture
def modified_since_backup(run_module: Callable, pg_server: PgServer, table_digest: Callable, dbs: Dbs,
                          backup_dir: str) -> Modified:
    """A sample database backed up into ``backup_dir`` with pg_backup, then modified (``modify``)."""
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    return Modified(db, made, table_digest(pg_server, db))


def backup_at(pg_server: PgServer, db: str, backup_dir: str, when: dt.datetime,
              s3: dict[str, Any] | None = None) -> dict[str, Any]:
    """A backup through the engine as if started at ``when`` (so several can be made in one second)."""
    job = BackupJob(conn=PgConn.from_params(pg_server.params(db)), db=db, backup_dir=backup_dir,
                    s3=S3Config.from_params(s3), policy=JobPolicy(weekly="never", prune=False))
    return ok(run_backup(job, now=when.replace(microsecond=0)))["backup"]


def restore_args(pg_server: PgServer, db: str, backup_dir: str, **extra: Any) -> dict[str, Any]:
    return {**pg_server.params(db), "backup_dir": backup_dir, **extra}


def files_under(path: str) -> dict[str, int]:
    """Every file below path (hidden ones too) with its size: a snapshot to compare."""
    found = {}
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            found[os.path.relpath(full, path)] = os.path.getsize(full)
    return found


def load_manifest(data_path: str) -> Manifest:
    with open(data_path + ".manifest.json", "rb") as handle:
        manifest = Manifest.from_json(handle.read(), location="local", origin=data_path + ".manifest.json")
    assert manifest is not None
    return manifest


def rewrite_backup_set(data_path: str, data: bytes | None = None, **manifest_changes: Any) -> Manifest:
    """Replace a local backup set's data and/or manifest fields, keeping it self-consistent.

    Uses the engine's own catalog helpers: size, sha256 and md5 in the
    manifest and the checksum files describe the new bytes, so only a real
    restore can tell that something is wrong.
    """
    import hashlib  # pylint: disable=import-outside-toplevel

    manifest = load_manifest(data_path)
    if data is not None:
        write_file_atomic(data_path, data)
        sha256, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()  # nosec
        write_file_atomic(data_path + ".sha256", checksum_line(sha256, manifest.file))
        write_file_atomic(data_path + ".md5", checksum_line(md5, manifest.file))
        manifest_changes.update(size=len(data), sha256=sha256, md5=md5)
    manifest = dataclasses.replace(manifest, **manifest_changes)
    write_file_atomic(data_path + ".manifest.json", manifest.to_json())
    return manifest


def zstd(data: bytes, decompress: bool = False) -> bytes:
    argv = ["zstd", "-q", "-c"] + (["-d"] if decompress else ["-3"])
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def flip_byte(path: str, offset: int | None = None) -> None:
    """Change one byte in place (same size): what bit rot looks like."""
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def failing_bin_dir(pg_server: PgServer, directory: str, always: bool = False) -> str:
    """A pg_bin_dir whose pg_restore dies midway once (or every time), then works (for the recovery).

    A failing call restores the schema and the data but no indexes or
    constraints, then the process kills itself (SIGKILL) like an OOM kill or
    an operator's ``kill -9``. Every other tool is the real one.
    """
    os.makedirs(directory)
    for tool in ("pg_dump", "pg_dumpall", "psql"):
        os.symlink(os.path.join(pg_server.bin_dir, tool), os.path.join(directory, tool))
    real = os.path.join(pg_server.bin_dir, "pg_restore")
    marker_file = os.path.join(directory, "killed-once")
    script = f"""#!/bin/sh
case "$1" in --version|-V) exec "{real}" "$@";; esac
if [ ! -e "{marker_file}" ] || [ "{int(always)}" = 1 ]; then
    : > "{marker_file}"
    "{real}" --section=pre-data --section=data "$@"
    echo "test wrapper: pg_restore killed midway" >&2
    kill -KILL $$
fi
exec "{real}" "$@"
"""
    path = os.path.join(directory, "pg_restore")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(script)
    os.chmod(path, 0o755)
    return directory


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------
# moto: the archive-tier (Glacier) flow


def waiting_logged(backup_dir: str, seen: int) -> bool:
    """True when a run log in backup_dir has more "Waiting for the archive restore" lines than ``seen``."""
    count = 0
    for name in os.listdir(backup_dir):
        if name.startswith("restore_") and name.endswith(".log"):
            with open(os.path.join(backup_dir, name), encoding="utf-8") as handle:
                count += handle.read().count("Waiting for the archive restore")
    return count > seen


@pytest.fixture
def moto_restores(moto_s3) -> Iterator[Any]:
    """transition(times): set moto's s3::keyrestore progression; unset (moto's default) afterwards."""
    def call(action: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(f"{moto_s3.endpoint_url}/moto-api/state-manager/{action}-transition",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:  # nosec - loopback test server
            assert resp.status == 201

    def transition(times: int) -> None:
        call("set", {"model_name": "s3::keyrestore", "transition": {"progression": "manual", "times": times}})

    transition(FROZEN)
    yield transition
    call("unset", {"model_name": "s3::keyrestore"})


class GlacierObject:
    """An object moved to GLACIER on moto, whose retrieval the test moves on step by step (``moto_restores``)."""

    def __init__(self, client: Any, bucket: str, key: str, transition: Callable[[int], None]) -> None:
        self.client, self.bucket, self.key, self.transition = client, bucket, key, transition
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, StorageClass="GLACIER",
                           MetadataDirective="COPY")
        assert client.head_object(Bucket=bucket, Key=key)["StorageClass"] == "GLACIER"

    def restore_header(self) -> str | None:
        return self.client.head_object(Bucket=self.bucket, Key=self.key).get("Restore")

    def start_retrieval(self) -> None:
        """The requested retrieval is now running (one step: None -> IN_PROGRESS), and stays so."""
        self.transition(1)
        assert self.restore_header() == 'ongoing-request="true"'
        self.transition(FROZEN)

    @contextlib.contextmanager
    def finished_while_waiting(self, backup_dir: str, seen: int) -> Iterator[None]:
        """Once a run in backup_dir logs more waits than ``seen`` (its log file), let moto finish the retrieval."""
        def finish() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not waiting_logged(backup_dir, seen):
                time.sleep(0.2)
            self.transition(1)
            self.restore_header()

        finisher = threading.Thread(target=finish)
        finisher.start()
        try:
            yield
        finally:
            finisher.join()
