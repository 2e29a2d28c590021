# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which files another program creates, and finishes writing, in one directory (Linux inotify).

A parallel ``pg_dump -Fd`` writes one file per table, from start to end. Each
can be read (hashed and uploaded) from the moment pg_dump creates it
(``IN_CREATE``) as it grows, and finished the moment pg_dump closes it
(``IN_CLOSE_WRITE``), while the others are still being written, instead of
in a second pass over the directory.
Through ctypes on libc's ``inotify_init1``/``inotify_add_watch`` and a plain
``read``: no extra dependency, and nothing polls the disk.

The kernel queue is bounded (``/proc/sys/fs/inotify/max_queued_events``):
when it overflows, ``overflowed`` is set and the caller must look at the
directory itself for what it missed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct

IN_CLOSE_WRITE = 0x00000008
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name, NUL padded)
_READ_SIZE = 64 * 1024


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class WriteWatch:
    """The files created, and closed after writing, in ``directory`` (not in its subdirectories); a context manager."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.overflowed = False
        libc = _libc()
        try:
            init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except AttributeError:
            raise OSError(errno.ENOSYS, "inotify is not available (Linux only)") from None
        add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1 failed: {os.strerror(err)} (raise fs.inotify.max_user_instances?)")
        if add_watch(self.fd, os.fsencode(directory), IN_CREATE | IN_CLOSE_WRITE) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"cannot watch {directory}: {os.strerror(err)} (raise fs.inotify.max_user_watches?)")
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def __enter__(self) -> "WriteWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, timeout: float = 0.0) -> list[tuple[str, str]]:
        """``("created" | "closed", name)`` of each file since the last call, in order; waits up to ``timeout`` s for one.

        "closed" is a close after writing (a file opened for writing again is closed again).
        """
        if not self._poll.poll(max(0, int(timeout * 1000))):
            return []
        events: list[tuple[str, str]] = []
        while True:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                raw = buf[offset + _EVENT.size:offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                elif mask & (IN_CREATE | IN_CLOSE_WRITE) and not mask & IN_ISDIR:
                    events.append(("created" if mask & IN_CREATE else "closed", os.fsdecode(raw.rstrip(b"\0"))))
