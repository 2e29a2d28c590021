# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run log (timestamped lines like the seed's scripts) and the per-target lock."""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import getpass
import json
import os
import re
import socket
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils.errors import LockBusy, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import own_like_parent


class RunLog:
    """Collects ``[YYYY-mm-dd HH:MM:SS] message`` lines; mirrors them to a 0600 file and an optional stream."""

    def __init__(self, path: str | None = None, echo: IO[str] | None = None, *, own_file: bool = False) -> None:
        """``own_file``: never append to an existing file (two runs in one second get ``<name>-2.log``, ...)."""
        self.path = path
        self.lines: list[str] = []
        self._echo = echo
        self._fh: IO[str] | None = None
        if path:
            stem, n = path[:-len(".log")] if path.endswith(".log") else path, 1
            while True:
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_EXCL if own_file else 0), 0o600)
                    own_like_parent(self.path)
                    break
                except FileExistsError:
                    n += 1
                    self.path = f"{stem}-{n}.log"
            self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def __call__(self, message: str) -> None:
        line = f"[{dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        self.lines.append(line)
        for stream in (self._fh, self._echo):
            if stream:
                try:
                    stream.write(line + "\n")
                    stream.flush()
                except OSError:
                    # a full disk must not turn the run's own clear error into a traceback:
                    # the lines stay in memory (the result, the webhook), the file stops here
                    if stream is self._fh:
                        self.close()

    def banner(self, title: str) -> None:
        self("=" * 41)
        self(title)
        self("=" * 41)

    def close(self) -> None:
        if self._fh:
            handle, self._fh = self._fh, None
            try:
                handle.close()
            except OSError:
                pass


class Lock:
    """An exclusive, non-blocking ``flock`` on ``path``; the holder writes who it is into the file.

    The kernel drops the lock when the process dies, so a crash never leaves
    a stale lock behind.
    """

    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def __enter__(self) -> "Lock":
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusy(f"another run of {self.what} is in progress ({holder}); lock file {self.path}. "
                               "Wait for it to finish; this run changed nothing.") from None
            raise StorageError(f"cannot lock {self.path}: {exc.strerror}.") from None
        info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                                "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass  # who holds it is only a courtesy to the next run (a full disk); the flock is the lock
        self._fd = fd
        return self

    def _open(self) -> int:
        """The lock file, created as the job's OS user; one another user left and nobody holds is replaced."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError:
            # e.g. root-owned, left by an ad-hoc run as root before 0.2: we may replace it (the directory is
            # ours) as long as no live run holds it, which the kernel's lock table tells without opening it
            if _held(self.path):
                raise LockBusy(f"another run of {self.what} is in progress (it holds {self.path}, which belongs to "
                               "another OS user); wait for it to finish; this run changed nothing.") from None
            try:
                os.unlink(self.path)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise StorageError(f"cannot open lock file {self.path}: {exc.strerror}; it belongs to another OS user: "
                                   f"remove it (rm {self.path}) when no backup or restore is running.") from None
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc.strerror}.") from None
        own_like_parent(self.path)
        return fd

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


_LOG_NAME_RE = re.compile(r"^(?P<prefix>.+_)(?P<stamp>\d{8}_\d{6})\.log$")


def expired_logs(path: str | None, now: dt.datetime, keep_days: int | None) -> list[str]:
    """The earlier run logs of the same job beside ``path`` (``<prefix><YYYYmmdd_HHMMSS>.log``) older than ``keep_days``.

    Run logs are kept as long as the backups they made; ``keep_days`` None
    keeps them for ever. Never the current run's log, nor files of other names.
    """
    match = _LOG_NAME_RE.match(os.path.basename(path or ""))
    if not match or keep_days is None:
        return []
    directory = os.path.dirname(path) or "."
    cutoff = now - dt.timedelta(days=keep_days)
    old = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in sorted(names):
        other = _LOG_NAME_RE.match(name)
        if not other or other["prefix"] != match["prefix"] or name == os.path.basename(path):
            continue
        started = dt.datetime.strptime(other["stamp"], "%Y%m%d_%H%M%S").replace(tzinfo=dt.timezone.utc)
        if started < cutoff:
            old.append(os.path.join(directory, name))
    return old


def _held(path: str) -> bool:
    """Whether some process holds a flock on ``path`` (/proc/locks), read without opening the file."""
    try:
        info = os.stat(path)
        with open("/proc/locks", encoding="ascii") as handle:
            table = handle.read()
    except OSError:
        return True  # cannot tell: assume it is held, never break a live lock
    inode = f" {os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino} "
    return any(inode in line + " " for line in table.splitlines())


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
    except (OSError, ValueError):
        return "holder unknown"


def append_audit(backup_dir: str, started: str, finished: str, record: dict[str, Any]) -> tuple[str | None, str | None]:
    """Append one restore to ``<backup_dir>/restore_audit.jsonl`` (0600): who, when, and ``record``.

    Returns (path, None), or (None, a warning) when the line cannot be written.
    """
    line = {"at": started, "finished_at": finished, "who": getpass.getuser(),
            "sudo_user": os.environ.get("SUDO_USER"), "host": socket.gethostname(), **record}
    path = os.path.join(backup_dir, "restore_audit.jsonl")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        own_like_parent(path)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
    except OSError as exc:
        return None, f"cannot append to the audit log {path}: {exc.strerror}"
    return path, None
