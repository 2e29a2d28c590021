# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a run leaves on disk belongs to the job's OS user, and its secrets leave with it.

Two rules, each learnt the hard way:

- An ad-hoc run as root (``become``) in a backup directory owned by
  ``postgres`` must not leave root-owned files there: the nightly cron job
  (as ``postgres``) would then fail on a root-owned lock file, could not
  append to the audit log, link a weekly copy or read a backup to upload it.
  ``own_like_parent`` gives what a root run creates to the directory's owner.
- A private temporary directory (the libpq passfile lives there) is named
  ``<purpose>-<pid>-<random>``, is removed on every exit path the process
  sees (``signals_raise`` turns SIGTERM and SIGHUP into an exception, so the
  ``with`` blocks unwind), and the next run removes those of dead processes,
  which is all a ``kill -9`` leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Iterator

_PRIVATE_RE = re.compile(r"^(?P<purpose>doctorq-[a-z]+)-(?P<pid>\d+)-(?P<host>[^-]*)-[A-Za-z0-9_]+$")
# what versions before 0.2 left in /tmp: doctorq-pg-<random>, no pid; removed once a day old
_LEGACY_RE = re.compile(r"^doctorq-pg-[A-Za-z0-9_]{8}$")
LEGACY_AGE_S = 24 * 3600


def own_like_parent(path: str) -> None:
    """As root, give ``path`` to the owner of its directory (the job's OS user); otherwise nothing to do."""
    if os.geteuid() != 0:
        return
    try:
        parent = os.stat(os.path.dirname(os.path.abspath(path)) or ".")
        if parent.st_uid != 0:
            os.lchown(path, parent.st_uid, parent.st_gid)
    except OSError:
        pass  # ownership is a courtesy to the next run; the file itself is written


def makedirs_owned(path: str, mode: int = 0o700) -> None:
    """``os.makedirs`` whose new directories belong to the owner of the nearest existing parent."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        own_like_parent(directory)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def reap_stale(base: str) -> list[str]:
    """Remove private directories in ``base`` left by dead runs on this host (and old ones of earlier versions)."""
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    host, uid = _host(), os.geteuid()
    for name in names:
        path = os.path.join(base, name)
        match = _PRIVATE_RE.match(name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if uid not in (0, info.st_uid):
            continue
        if match:
            stale = match["host"] == host and not _alive(int(match["pid"]))
        else:
            stale = bool(_LEGACY_RE.match(name)) and time.time() - info.st_mtime > LEGACY_AGE_S
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    return removed


@contextlib.contextmanager
def private_dir(purpose: str, base: str | None = None) -> Iterator[str]:
    """A 0700 directory only this run uses, removed however the ``with`` block ends; stale ones reaped first."""
    base = base or tempfile.gettempdir()
    reap_stale(base)
    path = tempfile.mkdtemp(prefix=f"doctorq-{purpose}-{os.getpid()}-{_host()}-", dir=base)
    try:
        os.chmod(path, 0o700)
        own_like_parent(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached the run: unwind like Ctrl-C, so every ``with`` block cleans up."""


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``Terminated`` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, _frame: object) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
