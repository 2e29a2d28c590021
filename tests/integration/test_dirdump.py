"""The parallel directory dump (dirdump) against the real PostgreSQL 15 and SeaweedFS of the test bed.

Each file is hashed and stored as pg_dump closes it; the directory restores
with stock ``pg_restore -j2``; ``sha256sum -c``/``md5sum -c`` accept the
sidecars; a failed upload, a ``kill -9`` or the deadline stop everything and
leave nothing behind, on disk or in S3.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import dirdump, procs
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.errors import StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, client_major
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store, object_tags

from backup_support import add_text_jsonb_table, wait_for

NAME = "db_full_20260101_000000.dir"


def running(pid: int) -> bool:
    """pg_dump (a child of this process) has not exited; without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False  # exited and reaped already


@pytest.fixture
def big_db(pg_server, pg_db: str) -> str:
    """The sample database plus one text/jsonb table big enough that pg_dump writes it for a while (~1 s)."""
    return add_text_jsonb_table(pg_server, pg_db, 400000)


def dump(pg_server, db: str, directory: str, sink: Any = None, **kwargs: Any) -> dirdump.DirDump:
    with PgClient(PgConn.from_params(pg_server.params(db))) as pg:
        pg_dump = pg.tool("pg_dump")
        argv = dirdump.dump_argv([pg_dump, "--no-password"], directory, 2,
                                 dirdump.compress_option("gzip", None, client_major(pg_dump)))
        return dirdump.run(argv, pg.env(db), directory, sink, **kwargs)


def s3_upload(bucket: dict[str, Any], client: Any = None) -> dirdump.S3Upload:
    cfg = s3util.S3Config.from_params(bucket)
    return dirdump.S3Upload(client or s3util.s3_client(cfg), cfg, cfg.key("db", "2026-01-01", NAME),
                            tags=object_tags("daily", data=True), metadata={"backup-id": NAME})


def restore_and_compare(pg_server, db: str, directory: str, table_digest) -> None:
    """Stock pg_restore -j2 into a new database: the same tables, the same rows."""
    target = f"{db}_restored"
    pg_server.query(f'CREATE DATABASE "{target}"')
    env = {**os.environ, **pg_server.libpq_env(target)}
    done = subprocess.run([os.path.join(pg_server.bin_dir, "pg_restore"), "-j2", "-d", target, directory], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    original = table_digest(pg_server, db)
    assert "public.big" in original and original["public.big"][0] == 400000
    assert table_digest(pg_server, target) == original


def check_sidecars(parent: str, result: dirdump.DirDump) -> None:
    """sha256sum -c and md5sum -c, run from the backup's parent directory, check every file."""
    for tool, algorithm in (("sha256sum", "sha256"), ("md5sum", "md5")):
        done = subprocess.run([tool, "-c", os.path.basename(result.sidecars[algorithm])], cwd=parent,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count(": OK\n") == len(result.files) == len(os.listdir(result.path))


def assert_nothing_left(tmp_path, directory: str, bucket: dict[str, Any], s3, pid: int) -> None:
    """No directory, no sidecars, no object or unfinished upload, nothing listed, no pg_dump process."""
    assert not os.path.exists(directory)
    assert sorted(os.listdir(tmp_path)) == []
    assert LocalStore(str(tmp_path)).list(None, None) == []
    client = s3.client()
    assert client.list_objects_v2(Bucket=bucket["bucket"]).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket["bucket"]).get("Uploads", []) == []
    assert S3Store(s3util.S3Config.from_params(bucket)).list(None, None) == []
    wait_for(lambda: not _group_alive(pid), timeout=10, what="pg_dump and its workers (its process group) to end")


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_disk_dump_restores_with_stock_pg_restore_and_sha256sum_accepts_it(pg_server, big_db, tmp_path, table_digest):
    directory = str(tmp_path / NAME)
    result = dump(pg_server, big_db, directory)

    names = sorted(os.listdir(directory))
    assert sorted(f.name for f in result.files) == names and "toc.dat" in names
    assert sum(n.endswith(".dat.gz") for n in names) >= 6  # one per table with rows, gzip-compressed
    assert result.late == []
    for entry in result.files:
        with open(os.path.join(directory, entry.name), "rb") as handle:
            data = handle.read()
        assert (entry.size, entry.sha256, entry.md5) == (len(data), hashlib.sha256(data).hexdigest(),
                                                         hashlib.md5(data).hexdigest())
        assert entry.s3 is None
    assert [f["name"] for f in result.manifest_files()] == names
    check_sidecars(str(tmp_path), result)
    restore_and_compare(pg_server, big_db, directory, table_digest)


def test_s3_dump_uploads_each_file_while_pg_dump_still_runs(pg_server, big_db, tmp_path, s3_bucket, seaweed,
                                                            table_digest):
    directory = str(tmp_path / NAME)
    client = seaweed.client()
    seen: dict[str, Any] = {"uploaded_while_running": []}

    def observe(kind: str, detail: Any) -> None:
        if kind == "started":
            seen["pid"] = detail
        elif kind == "stored":
            still_running = running(seen["pid"])
            head = client.head_object(Bucket=s3_bucket["bucket"], Key=detail.s3["key"])  # it is in S3 already
            assert head["ContentLength"] == detail.size
            if still_running:
                seen["uploaded_while_running"].append(detail.name)

    result = dump(pg_server, big_db, directory, s3_upload(s3_bucket), observe=observe)

    # overlap: files were closed, hashed and uploaded (and found in the bucket) before pg_dump exited
    # (which files make it depends on the load: toc.dat, written first, usually does, but pg_dump rewrites it last)
    assert len(seen["uploaded_while_running"]) >= 2, seen
    early = [f for f in result.files if f.stored_s < result.exited_s]
    assert len(early) >= 2, [(f.name, f.closed_s, f.stored_s, result.exited_s) for f in result.files]
    assert all(f.closed_s <= f.stored_s for f in result.files)

    # every object is there, with the checksums hashed on the way; fetch them and restore with stock tools
    fetched = tmp_path / "fetched"
    (fetched / NAME).mkdir(parents=True)
    for entry in result.files:
        assert entry.s3["key"].endswith(f"/{NAME}/{entry.name}") and entry.s3["checksum"]["value"]
        body = client.get_object(Bucket=s3_bucket["bucket"], Key=entry.s3["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry.sha256
        (fetched / NAME / entry.name).write_bytes(body)
    for algorithm in dirdump.SIDECARS:
        (fetched / os.path.basename(result.sidecars[algorithm])).write_bytes(
            dirdump.sidecar_text(NAME, result.files, algorithm))
    check_sidecars(str(tmp_path), result)
    check_sidecars(str(fetched), dirdump.DirDump(str(fetched / NAME), result.files, 0, 0,
                                                 {a: str(fetched / f"{NAME}.{a}") for a in dirdump.SIDECARS}, []))
    restore_and_compare(pg_server, big_db, str(fetched / NAME), table_digest)


class FailingUploads:
    """The real client, but every upload after the first goes with a wrong secret key (the real server refuses it)."""

    def __init__(self, good: Any, bad: Any, pid_of: dict[str, Any]) -> None:
        self.good, self.bad, self.pid_of = good, bad, pid_of
        self.uploads = 0
        self.running_at_failure: bool | None = None

    def __getattr__(self, name: str) -> Any:
        if name not in ("put_object", "create_multipart_upload", "upload_part"):
            return getattr(self.good, name)  # HEAD, delete, abort: the clean-up works

        def call(*args: Any, **kwargs: Any) -> Any:
            self.uploads += 1
            if self.uploads == 1:
                return getattr(self.good, name)(*args, **kwargs)
            if self.running_at_failure is None:
                self.running_at_failure = running(self.pid_of["pid"])
            return getattr(self.bad, name)(*args, **kwargs)
        return call


def test_an_upload_failure_mid_dump_stops_it_and_leaves_nothing(pg_server, big_db, tmp_path, s3_bucket, seaweed):
    directory = str(tmp_path / NAME)
    pid_of: dict[str, Any] = {}
    cfg = s3util.S3Config.from_params(s3_bucket)
    bad = s3util.s3_client(s3util.S3Config.from_params({**s3_bucket, "secret_key": "wrong-" + "x" * 20,
                                                        "max_attempts": 1}))
    client = FailingUploads(s3util.s3_client(cfg), bad, pid_of)

    with pytest.raises(StorageError) as failed:
        dump(pg_server, big_db, directory, s3_upload(s3_bucket, client),
             observe=lambda kind, detail: pid_of.setdefault("pid", detail) if kind == "started" else None)

    message = str(failed.value)
    assert "SignatureDoesNotMatch" in message and s3_bucket["bucket"] in message
    assert "was stopped; nothing of it is listed as complete" in message and "Nothing of it was kept" in message
    assert s3_bucket["secret_key"] not in message
    assert client.running_at_failure is True  # the failure came while pg_dump was still writing
    assert_nothing_left(tmp_path, directory, s3_bucket, seaweed, pid_of["pid"])


def test_kill_9_of_pg_dump_mid_dump_raises_and_leaves_nothing(pg_server, big_db, tmp_path, s3_bucket, seaweed):
    directory = str(tmp_path / NAME)
    seen: dict[str, Any] = {"stored": []}

    def observe(kind: str, detail: Any) -> None:
        if kind == "started":
            seen["pid"] = detail
        elif kind == "stored":
            seen["stored"].append(detail.name)
            if len(seen["stored"]) == 1:
                seen["running_at_kill"] = running(seen["pid"])
                os.kill(seen["pid"], signal.SIGKILL)

    with pytest.raises(procs.ProcessFailed) as failed:
        dump(pg_server, big_db, directory, s3_upload(s3_bucket), observe=observe)

    assert "pg_dump was killed by signal 9" in str(failed.value)
    assert "nothing of it is listed as complete" in str(failed.value)
    assert seen["stored"] and seen["running_at_kill"]  # a file was uploaded, then pg_dump killed mid-dump
    assert_nothing_left(tmp_path, directory, s3_bucket, seaweed, seen["pid"])
    # pg_dump's worker connections went with it
    wait_for(lambda: not pg_server.query("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                         "pg_backend_pid()", (big_db,)), timeout=30, what="pg_dump's backends to end")


def test_the_deadline_stops_the_dump_and_removes_it(pg_server, big_db, tmp_path):
    directory = str(tmp_path / NAME)
    with pytest.raises(procs.ProcessFailed) as failed:
        dump(pg_server, big_db, directory, timeout=0.2)
    assert "did not finish within 0.2 s" in str(failed.value) and "Nothing of it was kept" in str(failed.value)
    assert os.listdir(tmp_path) == []
