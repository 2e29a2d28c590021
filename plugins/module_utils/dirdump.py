# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A parallel dump in pg_dump's directory format, each file hashed and stored while pg_dump writes it.

``pg_dump -Fd -j N`` writes one file per table (and ``toc.dat``, which
pg_dump 15 writes first) with N server backends at once, and stock
``pg_restore -j N`` restores it in parallel. A single-stream pipe cannot do
either. Here pg_dump runs through ``procs`` (list argv, C locale, passfile
through the environment, deadline, its own process group) into a new
directory; ``inotify`` reports each file pg_dump creates, and a bounded pool
reads it once as it grows (pg_dump writes each file from start to end),
hashing it (SHA-256 and MD5) and handing the bytes to a sink: ``DiskOnly``
(the file is in place already) or ``S3Upload`` (one object per file, through
``pipeline.S3Sink``: verified PUT or multipart, aborted on failure). A file
is finished when pg_dump closes it (``IN_CLOSE_WRITE``), or exits. No second
pass over the directory, and no wait for the largest table's file to be
hashed and uploaded after pg_dump is done: what is left at its exit is what
it wrote in the last moments, but for files still waiting for a worker.

Bounds: at most ``workers`` files are read at once (``jobs`` of them: each of
pg_dump's workers writes one file at a time), each holding a 1 MiB read
buffer. When uploading, the parts of every file together (being filled and
in flight, each ``s3.part_size_mb``) share one ``UPLOAD_BUDGET`` (64 MiB, at
least one part; ``pipeline.MemoryBudget``): a file waits for room before it
starts a part. About ``workers * 1 MiB + 64 MiB`` whatever the size of the
database and whatever ``jobs``. Each file has at most ``parts_in_flight``
part in flight besides the one it fills, so 2 workers (``jobs: 2``) never
wait for the budget with 16 MiB parts. 64 MiB, not more: with 8 workers the
process's threads and allocator add about 30 MB of their own, and 128 MiB
took a ``jobs: 8`` backup to 244 MB (benchmarks/README.md, issue 13).

Any failure (pg_dump's exit status or a kill, an upload, the deadline) stops
everything at once: pg_dump's whole process group is killed, the pool
stopped, what was written removed (the directory, the objects uploaded), and
the error raised with a note saying so. A returned ``DirDump`` is still not a
backup: the caller's manifest, written last, is the commit point.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import posixpath
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils import inotify, pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import checksum_line
from ansible_collections.doctorq.backup.plugins.module_utils.errors import (
    ConfigError, DoctorqError, IntegrityError, StorageError,
)
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import own_like_parent

COMPRESSIONS = ("gzip", "zstd", "none")
UPLOAD_BUDGET = 64 << 20  # bytes of S3 parts held at once by all the files of one dump (S3Upload)
LEVELS = {"gzip": (1, 9, 6), "zstd": (1, 22, 3)}  # min, max, default
ZSTD_SINCE = 16  # pg_dump writes zstd files, and reads --compress=<method>:<level>, from this major version on
SIDECARS = ("sha256", "md5")
FOLLOW_POLL = 0.05  # seconds a reader at the end of a file still being written waits before reading again


def compress_option(kind: str, level: int | None, client_major: int) -> str:
    """pg_dump's ``--compress`` value for the directory format: gzip (any version), zstd (16 or newer), none."""
    if kind == "none":
        return "0"
    if kind not in LEVELS:
        raise ConfigError(f"compression {kind!r} is not one of {', '.join(COMPRESSIONS)} for directory dumps.")
    low, high, default = LEVELS[kind]
    level = default if level is None else level
    if not low <= level <= high:
        raise ConfigError(f"compression_level {level} is out of range for {kind}: use {low} to {high}.")
    if kind == "zstd" and client_major < ZSTD_SINCE:
        raise ConfigError(f"pg_dump {client_major} writes directory dumps with gzip only: set compression: gzip, or "
                          "install the client tools of PostgreSQL 16 or newer (pg_bin_dir) for zstd.")
    return f"{kind}:{level}" if client_major >= ZSTD_SINCE else str(level)


def dump_argv(base: Sequence[str], directory: str, jobs: int, compress: str) -> list[str]:
    """``base`` (pg_dump and its connection-free options, e.g. ``--snapshot``) plus the directory format's."""
    if jobs < 1:
        raise ConfigError(f"jobs is {jobs}: give the number of parallel pg_dump workers, at least 1.")
    return [*base, "--format=directory", f"--jobs={jobs}", f"--compress={compress}", f"--file={directory}"]


@dataclasses.dataclass
class DirFile:
    """One file of the dump as stored: for the manifest, and when it happened (seconds after the start)."""

    name: str
    size: int
    sha256: str
    md5: str
    s3: dict[str, Any] | None = None  # key and checksum of its object, when uploaded
    closed_s: float = 0.0
    stored_s: float = 0.0
    mtime_ns: int = dataclasses.field(default=0, repr=False)

    def facts(self) -> dict[str, Any]:
        """The file as the manifest lists it (its object's facts are the S3 part's: ``S3Upload.objects``)."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "md5": self.md5}


@dataclasses.dataclass
class DirDump:
    """What one dump wrote: every file (in the order they were stored), and its checksum files."""

    path: str
    files: list[DirFile]
    exited_s: float  # pg_dump's exit, seconds after the start
    duration_s: float
    sidecars: dict[str, str]  # "sha256"/"md5" -> path of <dir>.sha256 / <dir>.md5
    late: list[str]  # files no close event announced (inotify queue overflow), found in the directory at the end

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def manifest_files(self) -> list[dict[str, Any]]:
        return [f.facts() for f in sorted(self.files, key=lambda f: f.name)]


def sidecar_text(dirname: str, files: Sequence[DirFile], algorithm: str) -> bytes:
    """``sha256sum``/``md5sum`` lines for every file, as ``<dirname>/<file>``: checked from the parent directory."""
    return b"".join(checksum_line(getattr(f, algorithm), f"{dirname}/{f.name}")
                    for f in sorted(files, key=lambda f: f.name))


class DiskOnly:
    """Keep the files where pg_dump wrote them: hashing is all there is to do."""

    where = ""

    def open(self, name: str, size: int | None) -> None:  # pylint: disable=unused-argument
        return None

    def discard(self) -> str:
        return ""


class S3Upload:
    """One object per file under ``key_prefix``, each verified after upload (``pipeline.S3Sink``).

    ``tolerate_failure``: an upload failing does not stop the dump (the
    backup jobs' rule: S3 failing keeps the local copy); the error is kept in
    ``error``, the files after it stay on disk only, and the caller removes
    what was uploaded (``discard``). Otherwise it stops the dump like any failure.

    ``budget``: bytes the parts of all the files may hold at once (at least
    one part), whatever the number of workers; ``self.budget.peak`` is the
    most they held.
    """

    def __init__(self, client: Any, cfg: s3util.S3Config, key_prefix: str, *, tags: dict[str, str],
                 metadata: dict[str, str] | None = None, parts_in_flight: int = 1,
                 tolerate_failure: bool = False, budget: int = UPLOAD_BUDGET) -> None:
        self.client, self.cfg, self.key_prefix = client, cfg, key_prefix.rstrip("/")
        self.tags, self.metadata, self.parts_in_flight = tags, metadata, parts_in_flight
        self.tolerate_failure = tolerate_failure
        self.budget = pipeline.MemoryBudget(max(budget, cfg.part_size_mb << 20))
        self.error: StorageError | None = None
        self.where = cfg.uri(self.key_prefix + "/")
        self._keys: list[str] = []
        self._lock = threading.Lock()

    @property
    def keys(self) -> list[str]:
        """Every object this dump started (uploaded, or tried)."""
        with self._lock:
            return list(self._keys)

    def open(self, name: str, size: int | None) -> pipeline.S3Sink | None:
        """The sink of one file of ``size`` bytes, None while it grows (None once S3 failed: the rest stays on disk only)."""
        if self.error is not None:
            return None  # S3 failed on an earlier file: the rest stays on disk only
        key = posixpath.join(self.key_prefix, name)
        with self._lock:
            self._keys.append(key)  # before the upload starts: a failed run removes it whatever became of it
        return pipeline.S3Sink(self.client, self.cfg, key, tags=self.tags, metadata=self.metadata,
                               in_flight=self.parts_in_flight, tolerate_failure=self.tolerate_failure,
                               budget=self.budget, size=size)

    def failed(self, message: str) -> None:
        """A tolerated upload failure (the first is kept)."""
        with self._lock:
            if self.error is None:
                self.error = StorageError(message)

    def discard(self) -> str:
        """Delete every object this dump started; what could not be deleted, in words ("" when all went)."""
        with self._lock:
            keys, self._keys = self._keys, []
        for key in keys:
            try:
                with s3util.s3_errors("delete", self.cfg.uri(key)):
                    self.client.delete_object(Bucket=self.cfg.bucket, Key=key)
            except StorageError as exc:
                return (f"The objects under {self.where} could not all be removed ({exc}); no manifest lists them: "
                        f"remove them with `aws s3 rm --recursive {self.where}`.")
        return ""


class _Stopped(Exception):
    """The run is being stopped: a worker leaves its file (the sink aborts)."""


class _Run:
    """One dump's state: the pool of workers, what they stored, and the undo."""

    def __init__(self, directory: str, sink: DiskOnly | S3Upload, workers: int,
                 observe: Callable[[str, Any], None] | None) -> None:
        self.directory, self.sink, self.observe = directory, sink, observe or (lambda _kind, _detail: None)
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dirdump")
        self.seen: set[str] = set()
        self.done: dict[str, threading.Event] = {}  # set when pg_dump has closed the file (or exited)
        self.closed_at: dict[str, float] = {}  # seconds after the start, written before ``done`` is set
        self.files: list[DirFile] = []
        self.pending = 0

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def event(self, kind: str, name: str) -> None:
        """inotify's ``kind`` ("created", "closed") for ``name``: read it from its start, finish it at its first close.

        pg_dump's fsync pass closes every file again: only the first close counts.
        """
        done = self.done.setdefault(name, threading.Event())
        if kind == "closed" and name not in self.closed_at:
            self.closed_at[name] = self.elapsed()
            done.set()
            self.observe("closed", name)
        if name not in self.seen:
            self.seen.add(name)
            self.pending += 1
            self.pool.submit(self._report, name)

    def writer_gone(self) -> None:
        """pg_dump has exited: no file grows any more (also one whose close inotify did not report)."""
        now = self.elapsed()
        for name, done in self.done.items():
            self.closed_at.setdefault(name, now)
            done.set()

    def _report(self, name: str) -> None:
        try:
            self.results.put(self._store(name))
        except BaseException as exc:  # pylint: disable=broad-except  # handed to the run's thread, which raises it
            self.results.put(exc)

    def _store(self, name: str) -> DirFile:
        path = os.path.join(self.directory, name)
        done = self.done[name]
        hasher = pipeline.Hasher()
        buffer = bytearray(pipeline.CHUNK)  # this file's one read buffer (the sink copies what it keeps)
        view = memoryview(buffer)
        sink = None
        try:
            try:
                with open(path, "rb", buffering=0) as handle:
                    sink = self.sink.open(name, os.fstat(handle.fileno()).st_size if done.is_set() else None)
                    while not self.stop.is_set():
                        finished = done.is_set()  # before the read: a file closed before a read that finds its end is whole
                        got = handle.readinto(buffer)
                        if got:
                            hasher.update(view[:got])
                            if sink is not None:
                                sink.write(view[:got])
                        elif finished:
                            break
                        else:
                            done.wait(FOLLOW_POLL)
                    info = os.fstat(handle.fileno())
            except OSError as exc:
                raise StorageError(f"cannot read {path}, which pg_dump just wrote: {exc.strerror}; check the backup "
                                   "directory's disk and permissions.") from None
            if self.stop.is_set():
                raise _Stopped(name)
            digest = hasher.digest()
            if info.st_size != digest.size:
                raise IntegrityError(f"{path} grew after pg_dump closed it ({digest.size} bytes read, {info.st_size} "
                                     "now): something else writes into the backup directory; run the backup again.")
            stored = sink.commit(digest) if sink is not None else None
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        own_like_parent(path)  # a root run hands the file to the backup directory's owner, as it does the directory
        if stored and "error" in stored:  # tolerated (S3Upload.tolerate_failure): this file stays on disk only
            self.sink.failed(stored["error"])
            stored = None
        s3 = {"key": stored["key"], "checksum": stored["checksum"],
              "sha256_metadata": stored["sha256_metadata"]} if stored else None
        return DirFile(name, digest.size, digest.sha256, digest.md5, s3, self.closed_at[name], self.elapsed(),
                       info.st_mtime_ns)

    def collect(self, timeout: float | None = 0) -> None:
        """Take in what the workers finished; raise the first failure. ``timeout``: wait that long for one."""
        while self.pending:
            try:
                item = self.results.get(timeout=timeout) if timeout != 0 else self.results.get_nowait()
            except queue.Empty:
                return
            timeout = 0
            self.pending -= 1
            if isinstance(item, BaseException):
                raise item
            self.files.append(item)
            self.observe("stored", item)

    def finish(self, deadline: float | None) -> None:
        """Wait for the files still in the pool (within the deadline)."""
        while self.pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise StorageError(f"storing the files of {self.directory} did not finish within the deadline: check "
                                   f"the S3 endpoint{' ' + self.sink.where if self.sink.where else ''} and the disk.")
            self.collect(timeout=1.0 if left is None else min(1.0, left))

    def check_unchanged(self) -> None:
        """Every file is still what was hashed (size, mtime): pg_dump wrote none of them twice."""
        for entry in self.files:
            info = os.stat(os.path.join(self.directory, entry.name))
            if (info.st_size, info.st_mtime_ns) != (entry.size, entry.mtime_ns):
                raise IntegrityError(f"{entry.name} in {self.directory} changed after pg_dump first closed it, so its "
                                     "checksums do not hold: run the backup again, and report this with the pg_dump "
                                     "version.")

    def undo(self) -> str:
        """Stop the workers and remove what the dump wrote; returns what could not be removed ("" when all went)."""
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        left = self.sink.discard()
        for suffix in SIDECARS:
            pipeline.remove_quietly(f"{self.directory}.{suffix}")
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.path.exists(self.directory):
            left += f" {self.directory} could not be removed: remove it by hand."
        return left.strip()


def _exited(pid: int) -> bool:
    """Whether pg_dump has exited, without reaping it: while unreaped, its process group id cannot be reused."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(group: int) -> None:
    """pg_dump and its workers: killed pg_dump's workers would otherwise go on writing."""
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass


def _make_dir(directory: str) -> None:
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        raise StorageError(f"{directory} exists already (two runs in the same second?): run again in a moment.") from None
    except OSError as exc:
        raise StorageError(f"cannot create {directory}: {exc.strerror}; check that the backup directory exists and "
                           "is writable by the user running the backup.") from None
    own_like_parent(directory)


def run(argv: Sequence[str], env: dict[str, str], directory: str, sink: DiskOnly | S3Upload | None = None, *,
        workers: int = 2, timeout: float | None = None,
        observe: Callable[[str, Any], None] | None = None) -> DirDump:
    """Run ``argv`` (``dump_argv``: pg_dump writing into ``directory``, which must not exist) and store every file.

    ``env``: pg_dump's environment (``PgClient.env``: libpq variables, the
    passfile). ``workers``: files read (and uploaded) at once; their S3 parts
    share the sink's budget (``S3Upload``). ``timeout``:
    seconds for the whole dump, uploads included. ``observe(kind, detail)``,
    called on this thread: ``("started", pid)``, ``("closed", name)``,
    ``("stored", DirFile)``. Writes ``<directory>.sha256`` and ``.md5`` last.
    """
    sink = sink or DiskOnly()
    _make_dir(directory)
    state = _Run(directory, sink, workers, observe)
    deadline = None if timeout is None else state.t0 + timeout
    try:
        try:
            watch = inotify.WriteWatch(directory)
        except OSError as exc:
            raise StorageError(f"cannot watch {directory} for the files pg_dump writes: {exc.strerror}.") from None
        with watch, procs.Pipe([argv], env=env, stdout=subprocess.DEVNULL, names=["pg_dump"]) as pipe:
            pid = pipe.procs[0].pid
            state.observe("started", pid)
            reaped = False
            try:
                _follow(state, watch, pid, deadline, timeout)
                exited_s = state.elapsed()
                for kind, name in watch.read(0):
                    state.event(kind, name)
                state.writer_gone()
                reaped = True
                pipe.wait()  # pg_dump's exit status, with its stderr
            except BaseException:
                if not reaped:
                    _kill_group(pipe.group)
                raise
        late = sorted(set(os.listdir(directory)) - state.seen)
        for name in late:
            state.event("closed", name)
        state.finish(deadline)
        state.check_unchanged()
        state.pool.shutdown(wait=True)
        dirname = os.path.basename(directory.rstrip("/"))
        sidecars = {}
        for algorithm in SIDECARS:
            sidecars[algorithm] = f"{directory.rstrip('/')}.{algorithm}"
            pipeline.write_file_atomic(sidecars[algorithm], sidecar_text(dirname, state.files, algorithm))
        return DirDump(directory, state.files, exited_s, state.elapsed(), sidecars, late)
    except BaseException as exc:
        left = state.undo()
        if isinstance(exc, DoctorqError):
            kept = f" {left}" if left else " Nothing of it was kept, on disk or in S3."
            exc.args = (f"{exc} The directory dump into {directory} was stopped; nothing of it is listed as complete."
                        f"{kept}",)
        raise


def _follow(state: _Run, watch: inotify.WriteWatch, pid: int, deadline: float | None, timeout: float | None) -> None:
    """Until pg_dump exits: store each file it creates, and stop at the first failure or the deadline."""
    poller = select.poll()
    poller.register(watch.fd, select.POLLIN)
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)  # readable when pg_dump exits: no polling delay at the end
    except (AttributeError, OSError):
        pidfd = None
    try:
        while not _exited(pid):
            poller.poll(100 if pidfd is not None else 20)
            for kind, name in watch.read(0):
                state.event(kind, name)
            state.collect()
            if deadline is not None and time.monotonic() > deadline:
                raise procs.ProcessFailed(f"pg_dump did not finish within {timeout:g} s and was stopped.",
                                          name="pg_dump")
    finally:
        if pidfd is not None:
            os.close(pidfd)
