# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One streaming pass: producer | compressor -> hash -> sinks.

The producer (pg_dump) writes straight into the compressor through an OS
pipe, so Python only touches the compressed bytes: it hashes each chunk once
(sha256 and md5) and hands it to every sink (a local partial file, an S3
multipart upload). Every process's exit status is checked; none is lost in a
pipe.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from typing import IO, Any, Callable, Protocol, Sequence
from urllib.parse import urlencode

from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util

CHUNK = 1 << 20
COMPRESSIONS = ("zstd", "gzip", "none")
EXTENSIONS = {"zstd": ".zst", "gzip": ".gz", "none": ""}
DEFAULT_LEVELS = {"zstd": 3, "gzip": 6, "none": 0}


def compressor_argv(kind: str, level: int | None, threads: int) -> list[str] | None:
    """argv of the compressor stage, or None for no compression."""
    if kind == "none":
        return None
    level = DEFAULT_LEVELS[kind] if level is None else level
    threads = threads or os.cpu_count() or 1
    if kind == "zstd":
        binary = shutil.which("zstd")
        if not binary:
            raise DoctorqError("zstd not found on PATH: install the zstd package (the client role does) or set compression: gzip.")
        return [binary, "-q", "-c", f"-{level}", f"-T{threads}"]
    pigz = shutil.which("pigz")
    if pigz:
        return [pigz, "-c", f"-{level}", "-p", str(threads)]
    gzip = shutil.which("gzip")
    if not gzip:
        raise DoctorqError("neither pigz nor gzip found on PATH: install one of them.")
    return [gzip, "-c", f"-{level}"]


def decompressor_argv(kind: str) -> list[str] | None:
    if kind == "none":
        return None
    if kind == "zstd":
        return [shutil.which("zstd") or "zstd", "-q", "-d", "-c"]
    return [shutil.which("pigz") or shutil.which("gzip") or "gzip", "-d", "-c"]


@dataclasses.dataclass
class Digest:
    """Size and checksums of a byte stream, computed as it passes."""

    size: int = 0
    sha256: str = ""
    md5: str = ""


class Hasher:
    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5()  # nosec - md5 is for `md5sum -c` compatibility, sha256 is the integrity check
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._md5.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.size, self._sha.hexdigest(), self._md5.hexdigest())


class Sink(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self, digest: Digest) -> dict[str, Any]: ...
    def abort(self) -> None: ...


class LocalSink:
    """Writes ``<dir>/.<name>.partial`` (0600) and renames it into place on commit."""

    def __init__(self, final_path: str) -> None:
        self.final_path = final_path
        directory, name = os.path.split(final_path)
        self.partial_path = os.path.join(directory, f".{name}.partial")
        try:
            fd = os.open(self.partial_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create {self.partial_path}: {exc.strerror}; check that the backup directory "
                               "exists and is writable by the user running the backup.") from None
        self._fh = os.fdopen(fd, "wb", buffering=0)

    def write(self, chunk: bytes) -> None:
        try:
            self._fh.write(chunk)
        except OSError as exc:
            raise StorageError(f"writing {self.partial_path} failed: {exc.strerror}; free space in the backup "
                               "directory (or lower retention) and run again. Nothing was kept.") from None

    def commit(self, digest: Digest) -> dict[str, Any]:
        try:
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.rename(self.partial_path, self.final_path)
            fsync_dir(os.path.dirname(self.final_path))
        except OSError as exc:
            raise StorageError(f"finishing {self.final_path} failed: {exc.strerror}.") from None
        return {"path": self.final_path, "size": digest.size}

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            remove_quietly(self.partial_path)


class S3Sink:
    """Streams into an S3 object: one PUT when small, else a multipart upload.

    Parts are uploaded by worker threads while the dump goes on, at most
    ``in_flight`` parts at once, so memory stays at a few parts whatever the
    database size. Each part carries its SHA-256, which the server checks;
    after completion a HEAD checks size and the composite checksum.
    A failure aborts the multipart upload so no orphan parts stay behind;
    with ``tolerate_failure`` it is remembered instead of raised, so the local
    copy can still complete.
    """

    def __init__(self, client: Any, cfg: s3util.S3Config, key: str, *, tags: dict[str, str],
                 metadata: dict[str, str] | None = None, tolerate_failure: bool = False, in_flight: int = 3) -> None:
        self.client, self.cfg, self.key = client, cfg, key
        self.tags, self.metadata = tags, dict(metadata or {})
        self.part_size = cfg.part_size_mb * 1024 * 1024
        self.tolerate_failure = tolerate_failure
        self.error: StorageError | None = None
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._futures: list[concurrent.futures.Future] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(in_flight)

    @property
    def where(self) -> str:
        return self.cfg.uri(self.key)

    def _fail(self, exc: StorageError) -> None:
        self.abort()
        if not self.tolerate_failure:
            raise exc
        self.error = exc

    def write(self, chunk: bytes) -> None:
        if self.error:
            return
        self._buf += chunk
        try:
            while len(self._buf) >= self.part_size:
                part = bytes(self._buf[:self.part_size])
                del self._buf[:self.part_size]
                self._submit(part)
        except StorageError as exc:
            self._fail(exc)

    def _submit(self, part: bytes) -> None:
        if self._upload_id is None:
            with s3util.s3_errors("create multipart upload", self.where):
                resp = self.client.create_multipart_upload(
                    Bucket=self.cfg.bucket, Key=self.key, ChecksumAlgorithm="SHA256",
                    Tagging=urlencode(self.tags), Metadata=self.metadata, **self.cfg.write_args())
            self._upload_id = resp["UploadId"]
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3-part")
        for done in [f for f in self._futures if f.done()]:
            done.result()  # surface a failed part early
        self._slots.acquire()
        number = len(self._futures) + 1
        self._futures.append(self._pool.submit(self._upload_part, number, part))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        try:
            digest = hashlib.sha256(data).digest()
            with s3util.s3_errors(f"upload of part {number}", self.where):
                resp = self.client.upload_part(Bucket=self.cfg.bucket, Key=self.key, UploadId=self._upload_id,
                                               PartNumber=number, Body=data, ChecksumSHA256=_b64(digest))
            return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": _b64(digest), "_digest": digest}
        finally:
            self._slots.release()

    def commit(self, digest: Digest) -> dict[str, Any]:
        if self.error:
            return {"uri": self.where, "error": str(self.error)}
        try:
            if self._upload_id is None:
                expected = self._put_single(digest)
            else:
                expected = self._complete()
            self._verify(digest.size, expected)
        except StorageError as exc:
            self._fail(exc)
            return {"uri": self.where, "error": str(exc)}
        finally:
            if self._pool:
                self._pool.shutdown(wait=True)
        return {"uri": self.where, "bucket": self.cfg.bucket, "key": self.key, "size": digest.size,
                "storage_class": self.cfg.storage_class, "checksum_sha256": expected}

    def _put_single(self, digest: Digest) -> str:
        body = bytes(self._buf)
        checksum = _b64(bytes.fromhex(digest.sha256))
        with s3util.s3_errors("upload", self.where):
            self.client.put_object(Bucket=self.cfg.bucket, Key=self.key, Body=body, ChecksumSHA256=checksum,
                                   Tagging=urlencode(self.tags), Metadata={**self.metadata, "sha256": digest.sha256},
                                   **self.cfg.write_args())
        return checksum

    def _complete(self) -> str:
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf.clear()
        parts = [f.result() for f in self._futures]
        composite = _b64(hashlib.sha256(b"".join(p.pop("_digest") for p in parts)).digest()) + f"-{len(parts)}"
        with s3util.s3_errors("complete multipart upload", self.where):
            self.client.complete_multipart_upload(Bucket=self.cfg.bucket, Key=self.key, UploadId=self._upload_id,
                                                  MultipartUpload={"Parts": parts})
        self._upload_id = None
        return composite

    def _verify(self, size: int, checksum: str) -> None:
        with s3util.s3_errors("verification (HEAD)", self.where):
            head = self.client.head_object(Bucket=self.cfg.bucket, Key=self.key, ChecksumMode="ENABLED")
        if head["ContentLength"] != size:
            raise StorageError(f"upload to {self.where} is {head['ContentLength']} bytes, expected {size}: "
                               "the object was removed; run the backup again.")
        reported = head.get("ChecksumSHA256")
        if reported and reported != checksum:
            raise StorageError(f"upload to {self.where} has SHA-256 {reported}, expected {checksum}: "
                               "run the backup again.")

    def abort(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id:
            try:
                self.client.abort_multipart_upload(Bucket=self.cfg.bucket, Key=self.key, UploadId=self._upload_id)
            except Exception:  # pylint: disable=broad-except
                pass  # the next run aborts leftovers (see storage.S3Store.clean_uploads)
            self._upload_id = None
        self._buf.clear()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class StageFailed(DoctorqError):
    """A program of the pipeline exited non-zero."""


def run(stages: Sequence[Sequence[str] | None], env: dict[str, str], sinks: Sequence[Sink], *,
        names: Sequence[str] | None = None,
        accept: Callable[[int, int, str], bool] | None = None) -> tuple[Digest, list[dict[str, Any]]]:
    """Run ``stages`` as a pipe, hash the last stage's output and feed it to every sink.

    On any failure (a program's exit status, a sink's error) every process is
    stopped, every sink aborted, and the error raised: nothing is left that
    looks complete. ``accept(index, status, stderr)`` may declare a non-zero
    status of the stage at ``index`` (of the stages run) a success, for
    programs whose status also carries warnings (GNU tar's 1: "a file changed
    as we read it"); the caller gets the program's whole stderr to report them.
    """
    argvs = [list(s) for s in stages if s]
    names = list(names or [os.path.basename(a[0]) for a in argvs])
    procs: list[subprocess.Popen] = []
    errfiles = [tempfile.TemporaryFile() for _argv in argvs]
    hasher = Hasher()
    try:
        prev = None
        for argv, errf in zip(argvs, errfiles):
            try:
                proc = subprocess.Popen(argv, stdin=prev or subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=errf, env=env, close_fds=True)
            except OSError as exc:
                raise DoctorqError(f"cannot start {argv[0]}: {exc.strerror}") from None
            if prev is not None:
                prev.close()  # the child holds it now; we must not, or EOF never comes
            procs.append(proc)
            prev = proc.stdout
        out = procs[-1].stdout
        while True:
            chunk = out.read(CHUNK)
            if not chunk:
                break
            hasher.update(chunk)
            for sink in sinks:
                sink.write(chunk)
        out.close()
        for index, (proc, name, errf) in enumerate(zip(procs, names, errfiles)):
            code = proc.wait()
            if code != 0:
                errf.seek(0)
                stderr = errf.read()
                if accept is not None and accept(index, code, stderr.decode("utf-8", "replace")):
                    continue
                tail = stderr[-2000:].decode("utf-8", "replace").strip()
                raise StageFailed(f"{name} exited with status {code}: {tail or 'no message'}")
        digest = hasher.digest()
        results = [sink.commit(digest) for sink in sinks]
        return digest, results
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for sink in sinks:
            try:
                sink.abort()
            except Exception:  # pylint: disable=broad-except
                pass
        raise
    finally:
        for errf in errfiles:
            errf.close()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_file_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write via a hidden partial file and rename: readers see all or nothing."""
    directory, name = os.path.split(path)
    partial = os.path.join(directory, f".{name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, mode)
        os.rename(partial, path)
    except OSError as exc:
        remove_quietly(partial)
        raise StorageError(f"writing {path} failed: {exc.strerror}; check free space and permissions.") from None


def copy_hashed(reader: IO[bytes], writer: IO[bytes] | None = None) -> Digest:
    """Read a stream to its end, hashing it, optionally writing it out: one pass."""
    hasher = Hasher()
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return hasher.digest()
        hasher.update(chunk)
        if writer is not None:
            writer.write(chunk)
