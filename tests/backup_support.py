"""Helpers shared by the pg_backup / backup_info / CLI integration tests.

Nothing here is mocked: these are small real things the tests need around
the real servers of the test bed.

- ``GatedBin``: a ``pg_bin_dir`` whose ``pg_dump`` / ``pg_dumpall`` record
  their argv and environment, run the real program, and can then hold their
  stdout open until the test releases them. That puts a run in a known
  mid-stream state (partial file written, multipart upload started) without
  racing the clock.
- ``Webhook``: an HTTP server on 127.0.0.1 that keeps what it receives.
- ``Proxy``: a TCP relay in front of SeaweedFS that the test can cut, so the
  S3 endpoint disappears in the middle of an upload.
- ``tmpfs``: a small tmpfs mount (disk full, read-only file system).
- ``run_cli`` / ``start_cli``: the scheduled job's entry point as a real process.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_DIR = os.path.join(REPO_ROOT, ".build", "collections")
CLI_MODULE = "ansible_collections.doctorq.backup.cli.backup"
LOG_LINE = r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] "


def next_second() -> None:
    """Wait for the wall clock's next second: backups are named by the second they start in."""
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.01)


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --------------------------------------------------------------------------
# files


def tree(root: str) -> dict[str, os.stat_result]:
    """Every file under root (relative path -> lstat), hidden ones included."""
    found: dict[str, os.stat_result] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = os.lstat(path)
    return found


def backup_files(root: str) -> list[str]:
    """Files under root that belong to backups (not run logs, not lock files)."""
    return sorted(p for p in tree(root) if not os.path.basename(p).startswith("backup_")
                  and not p.endswith(".lock"))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_private(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


@contextlib.contextmanager
def tmpfs(path: str, size: str, read_only: bool = False) -> Iterator[str]:
    """Mount a tmpfs of `size` at path (tests run as root); unmounted afterwards whatever happens."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)


# --------------------------------------------------------------------------
# PostgreSQL

# A text/jsonb table pg_dump takes a moment to write (the directory dumps' tests, issue 13).
TEXT_JSONB_TABLE = ("CREATE TABLE public.big AS SELECT g AS id, md5(g::text) || repeat(' texto ñandú', 4) AS body, "
                    "jsonb_build_object('n', g, 'tag', 'año ' || (g % 97)) AS doc FROM generate_series(1, {rows}) g")


def add_text_jsonb_table(pg_server: Any, db: str, rows: int) -> str:
    """``public.big`` with ``rows`` rows of text and jsonb in ``db``; returns ``db``."""
    pg_server.query(TEXT_JSONB_TABLE.format(rows=int(rows)), dbname=db)
    return db


# --------------------------------------------------------------------------
# S3


def s3_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def s3_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def s3_parts(client: Any, bucket: str, upload: dict[str, Any]) -> list[dict[str, Any]]:
    return client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])


def s3_tags(client: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def s3_body(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --------------------------------------------------------------------------
# the CLI as a real process


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG", "PYTEST_"))}
    env.update(PYTHONPATH=COLLECTIONS_DIR, AWS_EC2_METADATA_DISABLED="true", PYTHONUNBUFFERED="1")
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", CLI_MODULE, *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), env=cli_env(), cwd="/", stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


class CliProcesses:
    """CLI runs started in their own session, so the test can kill exactly them (and their children)."""

    def __init__(self, tmp_dir: str) -> None:
        self.tmp_dir = tmp_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        n = len(self.procs)
        out = open(os.path.join(self.tmp_dir, f"cli-{n}.out"), "w+", encoding="utf-8")  # pylint: disable=consider-using-with
        err = open(os.path.join(self.tmp_dir, f"cli-{n}.err"), "w+", encoding="utf-8")  # pylint: disable=consider-using-with
        proc = subprocess.Popen(cli_argv(*args), env=cli_env(), cwd="/", stdin=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                                stdout=out, stderr=err, text=True, start_new_session=True)
        proc.out_file, proc.err_file = out, err  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> tuple[str, str]:
        texts = []
        for handle in (proc.out_file, proc.err_file):  # type: ignore[attr-defined]
            handle.flush()
            handle.seek(0)
            texts.append(handle.read())
        return texts[0], texts[1]

    @staticmethod
    def session_pids(proc: subprocess.Popen) -> list[int]:
        """Live processes of the run's session: the CLI and everything it started."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == proc.pid:
                        pids.append(int(entry))
        return pids

    def kill_session(self, proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None or self.session_pids(proc):
                self.kill_session(proc)
            for handle in (proc.out_file, proc.err_file):  # type: ignore[attr-defined]
                handle.close()


# --------------------------------------------------------------------------
# a pg_bin_dir that records and can hold


_WRAPPER = """#!/bin/sh
# Test stand-in for {tool}: records argv and environment, runs the real
# program, then (when held) keeps its stdout open until the test releases it.
case "$1" in --version|-V) exec {real} "$@";; esac
rec={state}/{tool}.$$
printf '%s\\n' "$@" > "$rec.argv"
cat /proc/$$/environ > "$rec.env"
{real} "$@"
rc=$?
touch "$rec.dumped"
{hold}
exit $rc
"""


class GatedBin:
    """``pg_bin_dir`` with recording wrappers for pg_dump and pg_dumpall; tools in ``hold`` wait for release()."""

    TOOLS = ("pg_dump", "pg_dumpall")

    def __init__(self, root: str, real_bin_dir: str, hold: tuple[str, ...] = ()) -> None:
        self.dir = os.path.join(root, "bin")
        self.state = os.path.join(root, "state")
        os.makedirs(self.dir)
        os.makedirs(self.state)
        for tool in self.TOOLS:
            wait = (f'while [ ! -e {self.state}/release ]; do sleep 0.05; done' if tool in hold else "")
            path = os.path.join(self.dir, tool)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(_WRAPPER.format(tool=tool, real=os.path.join(real_bin_dir, tool), state=self.state,
                                             hold=wait))
            os.chmod(path, 0o755)

    def release(self) -> None:
        with open(os.path.join(self.state, "release"), "w", encoding="utf-8"):
            pass

    def dumped(self, tool: str) -> bool:
        """True once the real program has written all its output (it may now be held)."""
        return any(n.startswith(tool + ".") and n.endswith(".dumped") for n in os.listdir(self.state))

    def calls(self, tool: str) -> list[tuple[list[str], dict[str, str]]]:
        """(argv, environment) of every run of tool (not counting --version probes)."""
        found = []
        for name in sorted(os.listdir(self.state)):
            if name.startswith(tool + ".") and name.endswith(".argv"):
                stem = os.path.join(self.state, name[:-len(".argv")])
                with open(stem + ".argv", encoding="utf-8") as handle:
                    argv = handle.read().splitlines()
                with open(stem + ".env", "rb") as handle:
                    env = dict(item.decode().split("=", 1) for item in handle.read().split(b"\0") if b"=" in item)
                found.append((argv, env))
        return found


# --------------------------------------------------------------------------
# webhook receiver


class Webhook:
    """POSTs received on 127.0.0.1 as (path, parsed JSON body)."""

    def __init__(self) -> None:
        received: list[tuple[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# servers that never finish answering (issue 11, case 4)


class Trickle:
    """A TCP server on 127.0.0.1 that answers every connection one byte every ``interval`` seconds, for ever.

    Its bytes are a plausible HTTP response (status line first), so a client
    with only a per-read timeout shorter than ``interval`` never times out.
    """

    def __init__(self, interval: float = 2.0, *, headers_at_once: bool = False) -> None:
        self.headers_at_once = headers_at_once  # the status line and headers at once, then the body byte by byte
        self.stop = threading.Event()
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.interval = interval
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client = self.listener.accept()[0]
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
        payload = head + b"x" * 1000000
        with contextlib.closing(client):
            if self.headers_at_once:
                with contextlib.suppress(OSError):
                    client.recv(65536)  # the request
                    client.sendall(head)
                payload = payload[len(head):]
            for byte in payload:
                if self.stop.wait(self.interval):
                    return
                try:
                    client.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections (the kernel's backlog) and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield sock.getsockname()[1]


# --------------------------------------------------------------------------
# an S3 endpoint that can vanish


class Proxy:
    """TCP relay 127.0.0.1:port -> target; cut() drops every connection and refuses new ones."""

    def __init__(self, target_url: str) -> None:
        host_port = target_url.split("://", 1)[1].rstrip("/")
        host, port = host_port.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.is_cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self.listener.accept()[0]
            except OSError:
                return
            with self.lock:
                if self.is_cut:
                    client.close()
                    return
                upstream = socket.create_connection(self.target)
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self.lock:
            self.is_cut = True
            for sock in [self.listener, *self.sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


# --------------------------------------------------------------------------
# secrets


def assert_no_secret(text: str, secrets: dict[str, str], where: str) -> None:
    for name, value in secrets.items():
        assert value not in text, f"{name} appears in {where}"
