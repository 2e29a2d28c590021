# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory backup (``pg_dump -Fd``) read back verified, every file, before anything is touched.

A directory backup is many files (docs/DESIGN.md "Backup naming"), each
with its size, SHA-256 and MD5 in the manifest. Before a restore touches a
database, every one of them is read once and compared with the manifest:

- from S3, a bounded pool downloads the objects in parallel, each streamed
  to its file in ``<work_dir>/<id>.dir.partial/`` while it is hashed (one
  read buffer per download in memory, whatever the size of the backup); the
  directory gets its name ``<id>.dir`` only when every file matched;
- on disk, every file is hashed in place (in parallel) and the restore
  reads the directory where it is: no copy.

A missing or damaged file, or a failed download, stops the pool at once:
the files being read are left, the download is removed, and the error names
the file. ``pg_restore -j N`` (restore_load.py) then reads the directory;
``restore_jobs`` says how many jobs by default.

``fetch_data``, ``data_names`` and ``discard`` treat one-file and directory
backups alike, so the restore job does not branch on the format.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import threading
import time
from typing import IO, Any, Callable, Iterator

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest
from ansible_collections.doctorq.backup.plugins.module_utils.errors import IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import Source, Sources, add_duration
from ansible_collections.doctorq.backup.plugins.module_utils.units import human

MAX_DOWNLOADS = 8  # objects downloaded at once: network-bound; memory is one read buffer (pipeline.CHUNK) each
PARTIAL = ".partial"


def restore_jobs(requested: int | None, manifest: Manifest) -> int:
    """pg_restore's jobs: as asked (0: one per core); by default the backup's own for a directory (capped by cores), else 1."""
    cores = os.cpu_count() or 1
    if requested is None:
        return max(1, min(manifest.jobs or 1, cores)) if manifest.is_directory else 1
    return requested or cores


def data_names(manifest: Manifest) -> list[str]:
    """The data files of a backup as its store names them: ``<id>.dir/<file>`` for each file of a directory."""
    if manifest.is_directory:
        return [f"{manifest.file}/{entry['name']}" for entry in manifest.dir_files or []]
    return [manifest.file]


def fetch_data(sources: Sources, source: Source, log: Callable[[str], None], *, keep: bool) -> str | None:
    """The backup's data read once and verified: a local path (a file, or a directory backup's directory).

    None for a download not ``keep`` (check mode: verified, then dropped).
    """
    if source.manifest.is_directory:
        return fetch_directory(sources, source, log, keep=keep)
    return sources.fetch_verified(source, source.manifest.file, log, keep=keep)


def discard(path: str | None) -> None:
    """Remove a download: a file, or a directory backup's directory."""
    if path and os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path:
        pipeline.remove_quietly(path)


def fetch_directory(sources: Sources, source: Source, log: Callable[[str], None], *, keep: bool) -> str | None:
    """Every file of a directory backup against the manifest: hashed in place on disk, downloaded from S3.

    Returns the directory to restore from (the backup's own on disk, the
    download in the work dir from S3; None for a download not ``keep``).
    """
    m = source.manifest
    files = list(m.dir_files or [])
    started = time.monotonic()
    in_place = source.store.local_path(m)
    target = partial = None
    if in_place is None and keep:
        target = os.path.join(sources.work_dir(), m.file)
        partial = target + PARTIAL
        discard(partial)  # what a killed run left
        discard(target)
        os.mkdir(partial, 0o700)
    reader = _Reader(source, in_place, partial, sources.wording.untouched, sources.wording.lister)
    workers = max(1, min(len(files), MAX_DOWNLOADS if in_place is None else (os.cpu_count() or 1)))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore-dir")
    try:
        for done in concurrent.futures.as_completed([pool.submit(reader.one, entry) for entry in files]):
            done.result()  # the first failure stops the rest
    except BaseException:
        reader.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        if partial:
            discard(partial)
        raise
    pool.shutdown(wait=True)
    seconds = time.monotonic() - started
    if in_place is None:
        add_duration(sources.durations, "download", started)
        log(f"Downloaded {len(files)} files of {m.file} ({human(m.size)}) in {seconds:.1f}s, {workers} at a time")
    else:
        add_duration(sources.durations, "verify", started)
    log(f"Checksums verified (SHA-256 and MD5) for every file of {m.file} ({len(files)} files, {human(m.size)})")
    if partial:
        os.rename(partial, target)
        return target
    return in_place


class _Reader:
    """Reads one file of a directory backup, hashing it (and writing a download), and checks it against the manifest."""

    def __init__(self, source: Source, in_place: str | None, partial: str | None, untouched: str, lister: str) -> None:
        self.source, self.in_place, self.partial = source, in_place, partial
        self.untouched, self.lister = untouched, lister
        self.stop = threading.Event()

    def one(self, entry: dict[str, Any]) -> None:
        name = entry["name"]
        m, store = self.source.manifest, self.source.store
        where = os.path.join(self.in_place, name) if self.in_place else store.describe(
            store.sibling(m, f"{m.file}/{name}"))
        if self.in_place:
            try:
                body: IO[bytes] = open(where, "rb")  # pylint: disable=consider-using-with
            except FileNotFoundError:
                raise self.damaged(name, f"{where} is missing") from None
            except OSError as exc:
                raise StorageError(f"cannot read {where}: {exc.strerror}.") from None
        else:
            try:
                body = store.open(m, f"{m.file}/{name}")
            except StorageError as exc:
                if exc.code in ("NoSuchKey", "404"):
                    raise self.damaged(name, f"{where} is missing") from None
                raise
        try:
            digest = self._copy(body, where, os.path.join(self.partial, name) if self.partial else None)
        finally:
            body.close()
        if digest is None:
            return  # stopped: another file failed
        if (digest.size, digest.sha256, digest.md5) != (entry["size"], entry["sha256"], entry["md5"]):
            raise self.damaged(name, f"{where} does not match the manifest: read {digest.size} bytes with sha256 "
                                     f"{digest.sha256} and md5 {digest.md5}, the manifest says {entry['size']} bytes, "
                                     f"sha256 {entry['sha256']}, md5 {entry['md5']}")

    def _copy(self, body: IO[bytes], where: str, out_path: str | None) -> pipeline.Digest | None:
        hasher = pipeline.Hasher()
        out = open(out_path, "wb") if out_path else None  # pylint: disable=consider-using-with
        try:
            with _disk_errors(where) if self.in_place else s3util.s3_errors("download", where):
                while not self.stop.is_set():
                    chunk = body.read(pipeline.CHUNK)
                    if not chunk:
                        return hasher.digest()
                    hasher.update(chunk)
                    if out:
                        out.write(chunk)
        finally:
            if out:
                out.close()
        return None

    def damaged(self, name: str, what: str) -> IntegrityError:
        removed = " and its download removed" if self.in_place is None else ""
        return IntegrityError(f"file {name} of directory backup {self.source.manifest.id}: {what}. The backup is "
                              f"damaged; {self.untouched} was not touched{removed}. Restore another backup "
                              f"({self.lister} lists them).")


@contextlib.contextmanager
def _disk_errors(where: str) -> Iterator[None]:
    """A read error of a file on disk as a StorageError naming it."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot read {where}: {exc.strerror}.") from None
