"""Throwaway servers for the tests: PostgreSQL 15, SeaweedFS (S3) and moto (S3).

Everything binds to 127.0.0.1 on free ports and lives in one directory, so
several beds (pytest-xdist workers, a developer's shell) never collide and
nothing touches the distribution's default cluster.

Used two ways:
- by tests/conftest.py, in-process: servers start on first use and stop at
  the end of the session (and at interpreter exit, even after a failure);
- as a CLI, for poking at things by hand or for benchmarks:
      python scripts/testbed.py up --dir DIR     # start all, write DIR/testbed.env
      python scripts/testbed.py down --dir DIR   # stop all, remove DIR
  `export DOCTORQ_TESTBED_DIR=DIR` makes pytest reuse that running bed instead
  of starting its own.

Why these details (see shared/TESTBED.md):
- initdb refuses to run as root and CI runs as root, so the cluster is created
  and run as the `postgres` OS user (`runuser -u postgres --`) in a directory
  chowned to it; host connections use scram-sha-256 so password handling is
  really exercised, the local socket is trust.
- `weed mini` otherwise binds 0.0.0.0, phones home and leaves sockets in /tmp:
  both -ip flags, -master.telemetry=false, explicit ports for every component
  and local sockets inside DIR. Its gRPC sockets are hard-wired to
  /tmp/seaweedfs-<component>-grpc-<port>.sock; weed removes them on SIGTERM
  and we remove leftovers after a kill.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

LOCALHOST = "127.0.0.1"
REGION = "us-east-1"
STATE_FILE = "testbed.json"
ENV_FILE = "testbed.env"
DIR_PREFIX = "doctorq-testbed-"
PG_MAJOR = os.environ.get("DOCTORQ_PG_MAJOR", "15")
# PostgreSQL 17 client tools of Debian 13, for the code paths that need client tools newer than the server
# (scripts/pg-client-newer.sh builds them there; DOCTORQ_PG17_BIN_DIR overrides)
PG_NEWER_MAJOR = 17
PG_NEWER_BIN_DIR = "/var/cache/doctorq/pg-client-17/bin"

# A machine with no AWS credentials must not make botocore probe the EC2
# metadata address (not loopback, and a 1-2 s stall per client).
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


class TestbedError(RuntimeError):
    """A server of the test bed could not be started or stopped."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------
# small helpers


def _venv_bin(name: str) -> str:
    """Find a console script of the running interpreter's environment first."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if not found:
        raise TestbedError(f"{name} not found next to {sys.executable} nor on PATH; run scripts/setup.sh")
    return found


def free_ports(count: int) -> list[int]:
    """Ask the kernel for `count` distinct free ports on 127.0.0.1.

    The sockets are held open until all ports are chosen so one call never
    returns the same port twice. A race with another process remains possible;
    the servers' start-up retries on a clash.
    """
    held: list[socket.socket] = []
    try:
        for _index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOCALHOST, 0))
            held.append(sock)
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def _port_open(port: int, host: str = LOCALHOST) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()[-20000:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); reap it if it is ours
    with contextlib.suppress(ChildProcessError, OSError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _kill_group(pid: int | None, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by pid, SIGKILL it if it lingers."""
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not _pid_alive(pid):
                return
            time.sleep(0.1)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def pg_bin_dir() -> str:
    """The server binaries of PostgreSQL PG_MAJOR (DOCTORQ_PG_BIN_DIR overrides)."""
    override = os.environ.get("DOCTORQ_PG_BIN_DIR")
    candidates = [override] if override else [f"/usr/lib/postgresql/{PG_MAJOR}/bin"]
    for cand in candidates:
        if cand and os.access(os.path.join(cand, "initdb"), os.X_OK):
            return cand
    raise TestbedError(
        f"PostgreSQL {PG_MAJOR} server binaries not found in {candidates}; "
        "run scripts/setup.sh (apt-get install postgresql) or set DOCTORQ_PG_BIN_DIR"
    )


def pg17_bin_dir() -> str:
    """pg_dump, pg_dumpall, pg_restore and psql of PostgreSQL 17 (DOCTORQ_PG17_BIN_DIR overrides)."""
    where = os.environ.get("DOCTORQ_PG17_BIN_DIR") or PG_NEWER_BIN_DIR
    try:
        out = subprocess.run([os.path.join(where, "pg_dump"), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise TestbedError(f"the PostgreSQL {PG_NEWER_MAJOR} client tools do not run from {where} ({exc}); "
                           "run scripts/setup.sh (scripts/pg-client-newer.sh) or set DOCTORQ_PG17_BIN_DIR") from None
    if f"(PostgreSQL) {PG_NEWER_MAJOR}." not in out:
        raise TestbedError(f"{where}/pg_dump is not PostgreSQL {PG_NEWER_MAJOR}: {out.strip()!r}")
    return where


# --------------------------------------------------------------------------
# PostgreSQL


@dataclass
class PgServer:
    """Connection facts of a running cluster (what tests and modules need)."""

    host: str
    port: int
    user: str
    password: str
    socket_dir: str
    bin_dir: str
    data_dir: str = ""
    log_file: str = ""

    def connect(self, dbname: str = "postgres", **kwargs: Any):
        """psycopg2 connection over TCP with the password, autocommit on."""
        import psycopg2  # pylint: disable=import-outside-toplevel

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=dbname, connect_timeout=10, **kwargs,
        )
        conn.autocommit = True
        return conn

    def params(self, db: str = "postgres") -> dict[str, Any]:
        """The PostgreSQL options of the collection's modules for database db."""
        return {
            "login_host": self.host,
            "login_port": self.port,
            "login_user": self.user,
            "login_password": self.password,
            "db": db,
        }

    def libpq_env(self, db: str = "postgres") -> dict[str, str]:
        """Environment for psql/pg_dump run by a test (password via env, not argv)."""
        return {
            "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
            "PGPASSWORD": self.password, "PGDATABASE": db,
        }

    def query(self, sql: str, args: Any = None, dbname: str = "postgres") -> list[tuple]:
        """Run one statement and return its rows ([] when it returns none)."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


class Postgres:
    """initdb + pg_ctl of one throwaway cluster under base_dir/pg."""

    def __init__(self, base_dir: str) -> None:
        self.root = os.path.join(base_dir, "pg")
        if not self._owner_can_reach(base_dir):
            # e.g. pytest's tmp_path (0700, root): keep the cluster in a
            # directory of its own under the temp dir instead
            self.root = os.path.join(tempfile.mkdtemp(prefix=DIR_PREFIX + "pg-"), "pg")
            os.chmod(os.path.dirname(self.root), 0o711)
        self.data_dir = os.path.join(self.root, "data")
        self.socket_dir = os.path.join(self.root, "run")
        self.log_file = os.path.join(self.root, "postgresql.log")
        self.bin_dir = pg_bin_dir()
        self.server: PgServer | None = None

    # Running as the postgres OS user when we are root (initdb refuses root).
    @staticmethod
    def _as_owner(argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    @classmethod
    def _owner_can_reach(cls, path: str) -> bool:
        if os.geteuid() != 0:
            return True
        probe = subprocess.run(cls._as_owner(["test", "-x", path]), cwd="/", stdin=subprocess.DEVNULL,
                               capture_output=True, check=False)
        return probe.returncode == 0

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
        return subprocess.run(
            self._as_owner(argv), cwd="/", env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def _chown(self, path: str) -> None:
        if os.geteuid() == 0:
            import pwd  # pylint: disable=import-outside-toplevel

            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> PgServer:
        if os.geteuid() == 0:
            try:
                import pwd  # pylint: disable=import-outside-toplevel

                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise TestbedError("no `postgres` OS user; run scripts/setup.sh (apt-get install postgresql)") from exc
        if len(os.path.join(self.socket_dir, ".s.PGSQL.65535")) > 100:
            raise TestbedError(f"socket path under {self.socket_dir} is too long for a unix socket; use a shorter --dir")
        os.makedirs(self.root, mode=0o700)
        os.makedirs(self.socket_dir, mode=0o755)
        for path in (self.root, self.socket_dir):
            self._chown(path)

        password = secrets.token_urlsafe(18)
        pwfile = os.path.join(self.root, "pwfile")
        _write_private(pwfile, password + "\n")
        self._chown(pwfile)
        res = self._run([
            os.path.join(self.bin_dir, "initdb"), "-D", self.data_dir, "-U", "postgres",
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        ])
        os.unlink(pwfile)
        if res.returncode != 0:
            raise TestbedError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")

        last_error = ""
        for _attempt in range(3):
            port = free_port()
            self._configure(port)
            res = self._run([
                os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data_dir, "-l", self.log_file,
                "-w", "-t", "60", "start",
            ])
            if res.returncode == 0:
                self.server = PgServer(
                    host=LOCALHOST, port=port, user="postgres", password=password,
                    socket_dir=self.socket_dir, bin_dir=self.bin_dir,
                    data_dir=self.data_dir, log_file=self.log_file,
                )
                return self.server
            last_error = f"{res.stdout}\n{res.stderr}\n{_tail(self.log_file)}"
            if "Address already in use" not in last_error:
                break
        raise TestbedError(f"pg_ctl start failed:\n{last_error}")

    def _configure(self, port: int) -> None:
        conf = os.path.join(self.data_dir, "postgresql.auto.conf")
        settings = {
            "listen_addresses": LOCALHOST,
            "port": str(port),
            "unix_socket_directories": self.socket_dir,
            "password_encryption": "scram-sha-256",
            # speed over durability: the cluster is thrown away
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "60",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            "log_timezone": "UTC",
            "timezone": "UTC",
        }
        body = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write("# written by scripts/testbed.py\n" + body)
        self._chown(conf)

    def stop(self) -> None:
        stop_cluster(self.bin_dir, self.data_dir)


def stop_cluster(bin_dir: str, data_dir: str) -> None:
    """pg_ctl stop -m fast (immediate if that hangs); a no-op when not running."""
    pidfile = os.path.join(data_dir, "postmaster.pid")
    if not os.path.exists(pidfile):
        return
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    for mode in ("fast", "immediate"):
        argv = Postgres._as_owner([pg_ctl, "-D", data_dir, "-m", mode, "-w", "-t", "30", "stop"])
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(argv, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, timeout=45, check=False)
        if not os.path.exists(pidfile):
            return
    # last resort: the postmaster pid is the first line of postmaster.pid
    with contextlib.suppress(OSError, ValueError):
        with open(pidfile, encoding="ascii") as handle:
            os.kill(int(handle.readline().strip()), signal.SIGKILL)


# --------------------------------------------------------------------------
# S3 servers


@dataclass
class S3Server:
    """An S3 endpoint with one identity."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def client(self, **kwargs: Any):
        """A boto3 S3 client for this endpoint (path-style addressing)."""
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        config = kwargs.pop("config", None) or Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=config, **kwargs,
        )

    def s3_option(self, bucket: str) -> dict[str, Any]:
        """The `s3` option of the collection's modules for this bucket."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
        }

    def wait_ready(self, timeout: float, alive: Any = None, log: str = "") -> None:
        """Until a signed ListBuckets succeeds (the port opens before auth is loaded)."""
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        client = self.client(config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise TestbedError(f"{self.name} exited during start-up:\n{_tail(log)}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # pylint: disable=broad-exception-caught
                last = exc
            time.sleep(0.2)
        raise TestbedError(f"{self.name} did not answer at {self.endpoint_url} within {timeout:.0f}s: {last}\n{_tail(log)}")


# weed mini components and their port flags; gRPC sockets are named after these ports
_WEED_PORT_FLAGS = (
    ("master", "-master.port", "-master.port.grpc"),
    ("volume", "-volume.port", "-volume.port.grpc"),
    ("filer", "-filer.port", "-filer.port.grpc"),
    ("s3", "-s3.port", "-s3.port.grpc"),
    ("admin", "-admin.port", "-admin.port.grpc"),
)


def _weed_tmp_sockets(ports: dict[str, int]) -> list[str]:
    """The sockets weed puts in /tmp whatever we say (named after our ports)."""
    paths = []
    for component, _http, _grpc in _WEED_PORT_FLAGS:
        paths.append(f"/tmp/seaweedfs-{component}-grpc-{ports[component + '.grpc']}.sock")
    paths.append(f"/tmp/seaweedfs-filer-{ports['filer']}.sock")
    paths.append(f"/tmp/seaweedfs-s3-{ports['s3']}.sock")
    return paths


class SeaweedFS:
    """`weed mini` (master, volume, filer, S3 in one process) under base_dir/seaweed."""

    def __init__(self, base_dir: str) -> None:
        self.root = os.path.join(base_dir, "seaweed")
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.ports: dict[str, int] = {}
        self.server: S3Server | None = None
        self.log_file = os.path.join(self.root, "weed.out")

    def start(self, timeout: float = 60) -> S3Server:
        for sub in ("data", "logs"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        access_key = "AK" + secrets.token_hex(8).upper()
        secret_key = secrets.token_urlsafe(30)
        s3_json = os.path.join(self.root, "s3.json")
        _write_private(s3_json, json.dumps({
            "identities": [{
                "name": "doctorq-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }],
        }, indent=2))
        weed = _venv_bin("weed")
        last_error = ""
        for _attempt in range(3):
            ports = dict(zip(
                [name for comp, _h, _g in _WEED_PORT_FLAGS for name in (comp, comp + ".grpc")],
                free_ports(2 * len(_WEED_PORT_FLAGS)),
            ))
            argv = [
                weed, f"-logdir={self.root}/logs", "mini",
                f"-dir={self.root}/data",
                f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}",
                "-master.telemetry=false",
                f"-s3.config={s3_json}",
                "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.localSocket={self.root}/s3.sock",
                f"-filer.localSocket={self.root}/filer.sock",
            ]
            for comp, http_flag, grpc_flag in _WEED_PORT_FLAGS:
                argv += [f"{http_flag}={ports[comp]}", f"{grpc_flag}={ports[comp + '.grpc']}"]
            with open(self.log_file, "ab") as log:
                self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                    argv, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: killpg stops all of it
                    env={**os.environ, "TMPDIR": self.root},
                )
            self.pid = self.proc.pid
            self.ports = ports
            server = S3Server("SeaweedFS", f"http://{LOCALHOST}:{ports['s3']}", access_key, secret_key)
            try:
                server.wait_ready(timeout, alive=self._proc_alive, log=self.log_file)
            except TestbedError as exc:
                last_error = str(exc)
                self.stop()
                if "address already in use" in last_error.lower():
                    continue
                raise
            self.server = server
            return server
        raise TestbedError(last_error)

    def _proc_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_weed(self.pid, self.ports, self.proc)
        self.proc = None
        self.pid = None


def stop_weed(pid: int | None, ports: dict[str, int], proc: subprocess.Popen | None = None) -> None:
    _kill_group(pid, proc)
    if ports:
        for path in _weed_tmp_sockets(ports):
            with contextlib.suppress(OSError):
                os.unlink(path)


class Moto:
    """moto's S3 server, in a process of its own.

    Never a thread of the test process: moto's backends are that process's
    globals, and a bucket vanished from the in-process server about once in
    four full runs (NoSuchBucket right after create_bucket, seen in two
    different tests). A process of its own shares nothing with the tests.
    """

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"

    def __init__(self, base_dir: str) -> None:
        self.root = os.path.join(base_dir, "moto")
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.server: S3Server | None = None

    def start(self, timeout: float = 30) -> S3Server:
        os.makedirs(self.root, exist_ok=True)
        log = os.path.join(self.root, "moto.out")
        last_error = ""
        for _attempt in range(3):
            port = free_port()
            server = S3Server("moto", f"http://{LOCALHOST}:{port}", self.ACCESS_KEY, self.SECRET_KEY)
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                    [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)],
                    cwd=self.root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid = self.proc.pid
            try:
                server.wait_ready(timeout, alive=self._proc_alive, log=log)
            except TestbedError as exc:
                last_error = str(exc)
                self.stop()
                continue
            self.server = server
            return server
        raise TestbedError(f"moto did not start: {last_error}")

    def _proc_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        _kill_group(self.pid, self.proc)
        self.proc = None
        self.pid = None


# --------------------------------------------------------------------------
# the bed


@dataclass
class _State:
    """What `down` (possibly another process) needs to stop the bed."""

    dir: str
    owner_pid: int | None
    pg_root: str = ""
    pg: dict[str, Any] = field(default_factory=dict)
    seaweed: dict[str, Any] = field(default_factory=dict)
    moto: dict[str, Any] = field(default_factory=dict)


class Testbed:
    """The three servers in one directory; each starts on first use."""

    __test__ = False  # not a pytest test class

    def __init__(self, base_dir: str | None = None, detached: bool = False) -> None:
        """base_dir None: a fresh private temp dir, removed by down().

        detached: the servers must outlive this process (CLI `up`): no atexit
        hook stops anything.
        """
        reap_stale()
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix=DIR_PREFIX)
        else:
            base_dir = os.path.abspath(base_dir)
            os.makedirs(base_dir, exist_ok=True)
            if os.path.exists(os.path.join(base_dir, STATE_FILE)):
                raise TestbedError(f"{base_dir} already holds a test bed; run `down --dir {base_dir}` first")
        # the postgres user must be able to traverse into DIR/pg
        os.chmod(base_dir, 0o711)
        self.dir = base_dir
        self.detached = detached
        self.attached = False
        self._pg = Postgres(base_dir)
        self._seaweed = SeaweedFS(base_dir)
        self._moto = Moto(base_dir)
        self._state = _State(dir=base_dir, owner_pid=None if detached else os.getpid(), pg_root=self._pg.root)
        self._stopped = False
        self._save()
        if not detached:
            atexit.register(self.down)

    # ---- attach to a bed started by `up` in another process
    @classmethod
    def attach(cls, base_dir: str) -> "Testbed":
        """Use the running bed described by base_dir/testbed.json; down() will not stop it."""
        path = os.path.join(os.path.abspath(base_dir), STATE_FILE)
        try:
            with open(path, encoding="utf-8") as handle:
                state = _State(**json.load(handle))
        except (OSError, ValueError, TypeError) as exc:
            raise TestbedError(f"no test bed at {base_dir} ({exc}); start one with `scripts/testbed.py up --dir {base_dir}`") from exc
        bed = cls.__new__(cls)
        bed.dir = state.dir
        bed.detached = True
        bed.attached = True
        bed._state = state
        bed._stopped = False
        bed._pg = bed._seaweed = bed._moto = None  # type: ignore[assignment]
        return bed

    @property
    def state(self) -> _State:
        """What the bed knows about its servers (ports, pids, paths)."""
        return self._state

    def _save(self) -> None:
        _write_private(os.path.join(self.dir, STATE_FILE), json.dumps(asdict(self._state), indent=2))

    # ---- servers
    def postgres(self) -> PgServer:
        if not self._state.pg:
            if self.attached:
                raise TestbedError(f"the bed at {self.dir} has no PostgreSQL")
            server = self._pg.start()
            self._state.pg = asdict(server)
            self._save()
        return PgServer(**self._state.pg)

    def seaweed(self) -> S3Server:
        if not self._state.seaweed:
            if self.attached:
                raise TestbedError(f"the bed at {self.dir} has no SeaweedFS")
            server = self._seaweed.start()
            self._state.seaweed = {**asdict(server), "pid": self._seaweed.pid, "ports": self._seaweed.ports}
            self._save()
        return _s3_from_state(self._state.seaweed)

    def moto(self) -> S3Server:
        if not self._state.moto:
            if self.attached:
                raise TestbedError(f"the bed at {self.dir} has no moto")
            server = self._moto.start()
            self._state.moto = {**asdict(server), "pid": self._moto.pid}
            self._save()
        return _s3_from_state(self._state.moto)

    def up(self) -> None:
        """Start all three servers."""
        self.postgres()
        self.seaweed()
        self.moto()

    def down(self) -> None:
        """Stop whatever this bed started and remove its directory if it made it."""
        if self._stopped or self.attached:
            return
        self._stopped = True
        with contextlib.suppress(ValueError):
            atexit.unregister(self.down)
        errors = []
        for stopper in (self._moto.stop, self._seaweed.stop, self._pg.stop):
            try:
                stopper()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                errors.append(f"{stopper.__qualname__}: {exc}")
        _finish_down(self.dir, remove_data=True, pg_root=self._state.pg_root)
        if errors:
            raise TestbedError("; ".join(errors))

    # ---- env file
    def env(self) -> dict[str, str]:
        """Shell variables describing the bed (for `source DIR/testbed.env`)."""
        env = {"DOCTORQ_TESTBED_DIR": self.dir, "AWS_EC2_METADATA_DISABLED": "true"}
        if self._state.pg:
            pg = PgServer(**self._state.pg)
            env.update(pg.libpq_env())
            env.update(DOCTORQ_PG_SOCKET_DIR=pg.socket_dir, DOCTORQ_PG_BIN_DIR=pg.bin_dir)
            with contextlib.suppress(TestbedError):  # only where setup.sh built them
                env["DOCTORQ_PG17_BIN_DIR"] = pg17_bin_dir()
        for key, state in (("SEAWEED", self._state.seaweed), ("MOTO", self._state.moto)):
            if state:
                env[f"DOCTORQ_{key}_ENDPOINT"] = state["endpoint_url"]
                env[f"DOCTORQ_{key}_ACCESS_KEY"] = state["access_key"]
                env[f"DOCTORQ_{key}_SECRET_KEY"] = state["secret_key"]
        env["DOCTORQ_S3_REGION"] = REGION
        return env

    def write_env(self) -> str:
        path = os.path.join(self.dir, ENV_FILE)
        text = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in self.env().items())
        _write_private(path, text)
        return path


def _s3_from_state(state: dict[str, Any]) -> S3Server:
    return S3Server(**{k: state[k] for k in ("name", "endpoint_url", "access_key", "secret_key", "region")})


def _finish_down(base_dir: str, remove_data: bool, pg_root: str = "") -> None:
    """Forget the bed; with remove_data also delete what it wrote (never other files in DIR)."""
    if remove_data:
        for name in ("pg", "seaweed", "moto"):
            shutil.rmtree(os.path.join(base_dir, name), ignore_errors=True)
        if pg_root and os.path.dirname(pg_root) != base_dir:
            shutil.rmtree(os.path.dirname(pg_root), ignore_errors=True)
    for name in (STATE_FILE, ENV_FILE):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(base_dir, name))
    if remove_data:
        with contextlib.suppress(OSError):
            os.rmdir(base_dir)  # only if nothing else is left in it


def down_dir(base_dir: str, remove: bool = True) -> None:
    """Stop the bed described by base_dir/testbed.json (from any process)."""
    path = os.path.join(os.path.abspath(base_dir), STATE_FILE)
    with open(path, encoding="utf-8") as handle:
        state = _State(**json.load(handle))
    if state.moto:
        _kill_group(state.moto.get("pid"))
    if state.seaweed:
        stop_weed(state.seaweed.get("pid"), state.seaweed.get("ports") or {})
    if state.pg:
        stop_cluster(state.pg["bin_dir"], state.pg["data_dir"])
    else:
        stop_cluster(pg_bin_dir(), os.path.join(state.pg_root or os.path.join(state.dir, "pg"), "data"))
    _finish_down(state.dir, remove_data=remove, pg_root=state.pg_root)


def reap_stale() -> list[str]:
    """Stop beds in the temp dir whose owning process died without down() (SIGKILL, OOM)."""
    reaped = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), DIR_PREFIX + "*", STATE_FILE)):
        try:
            with open(path, encoding="utf-8") as handle:
                owner = json.load(handle).get("owner_pid")
        except (OSError, ValueError):
            continue
        if owner and not _pid_alive(owner):
            with contextlib.suppress(Exception):
                down_dir(os.path.dirname(path), remove=True)
                reaped.append(os.path.dirname(path))
    return reaped


# --------------------------------------------------------------------------
# database helpers shared by the tests


def table_digest(pg_server: PgServer, dbname: str) -> dict[str, tuple[int, str]]:
    """{'schema.table': (row count, md5 of all rows in a fixed order)} for every user table.

    Rows are ordered by their text form, so the digest does not depend on
    physical order and two databases with the same content compare equal.
    """
    from psycopg2 import sql  # pylint: disable=import-outside-toplevel

    conn = pg_server.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%' "
                "ORDER BY 1, 2"
            )
            tables = cur.fetchall()
            digest: dict[str, tuple[int, str]] = {}
            for schema, table in tables:
                cur.execute(sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
                    "FROM {} t"
                ).format(sql.Identifier(schema, table)))
                count, md5 = cur.fetchone()
                digest[f"{schema}.{table}"] = (int(count), md5)
            return digest
    finally:
        conn.close()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def drop_database(pg_server: PgServer, name: str) -> None:
    """Terminate the sessions of database name and drop it (no error if absent)."""
    conn = pg_server.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name.replace('"', '""'))
    finally:
        conn.close()


def empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object version, delete marker and pending upload, then the bucket."""
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for start in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True},
                                  BypassGovernanceRetention=True)
    # servers that list no versions for unversioned buckets still list objects
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    with contextlib.suppress(Exception):
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------------
# CLI


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, SeaweedFS and moto; write DIR/testbed.env")
    up.add_argument("--dir", required=True, help="directory for data, logs and the env file")
    up.add_argument("--only", action="append", choices=["pg", "seaweed", "moto"],
                    help="start only these servers (repeatable)")
    down = sub.add_parser("down", help="stop the bed in DIR and remove DIR")
    down.add_argument("--dir", required=True)
    down.add_argument("--keep", action="store_true", help="keep DIR (data and logs) after stopping")
    env = sub.add_parser("env", help="print the env file of the running bed in DIR")
    env.add_argument("--dir", required=True)
    args = parser.parse_args(argv)

    if args.command == "up":
        bed = Testbed(args.dir, detached=True)
        try:
            wanted = args.only or ["pg", "seaweed", "moto"]
            started = time.monotonic()
            if "pg" in wanted:
                bed.postgres()
            if "seaweed" in wanted:
                bed.seaweed()
            if "moto" in wanted:
                bed.moto()
        except BaseException:
            with contextlib.suppress(Exception):
                down_dir(bed.dir, remove=False)
            raise
        path = bed.write_env()
        with open(path, encoding="utf-8") as handle:
            sys.stdout.write(handle.read())
        print(f"# written to {path} in {time.monotonic() - started:.1f}s; stop with: {sys.argv[0]} down --dir {bed.dir}",
              file=sys.stderr)
        return 0
    if args.command == "down":
        if not os.path.exists(os.path.join(args.dir, STATE_FILE)):
            print(f"no test bed in {args.dir}", file=sys.stderr)
            return 1
        down_dir(args.dir, remove=not args.keep)
        return 0
    if args.command == "env":
        with open(os.path.join(args.dir, ENV_FILE), encoding="utf-8") as handle:
            sys.stdout.write(handle.read())
        return 0
    return 2


if __name__ == "__main__":
    try:
        sys.exit(_cli())
    except TestbedError as err:
        print(f"testbed: {err}", file=sys.stderr)
        sys.exit(1)
