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
import contextlib
import ctypes
import dataclasses
import hashlib
import os
import shutil
import threading
import zlib
from typing import IO, Any, Callable, Protocol, Sequence
from urllib.parse import quote, urlencode

from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import own_like_parent
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
            own_like_parent(self.partial_path)
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


# glibc's mmap threshold (M_MMAP_THRESHOLD) and the size it is fixed at.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
_mmap_threshold_fixed = False


def fix_mmap_threshold() -> None:
    """Give every allocation of 4 MiB or more (S3 parts) its own mapping, returned to the system when freed.

    Parts are made by the dump's thread and freed by the upload threads;
    glibc raises its mmap threshold after the first such frees, and the later
    parts then come from per-thread heaps that fragment and keep their pages:
    the Python process grew from 131 MB to 250 MB as a directory backup's
    output went from 87 MB to 1.7 GB (benchmarks/README.md, issue 13).
    Setting the threshold fixes it (and ends its adjustment). Once per process;
    without glibc nothing happens.
    """
    global _mmap_threshold_fixed  # pylint: disable=global-statement
    if _mmap_threshold_fixed:
        return
    _mmap_threshold_fixed = True
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc


class MemoryBudget:
    """Bytes that S3 parts may hold at once, shared by the sinks of one run (``S3Sink(budget=...)``).

    A sink takes a whole part's worth before it starts filling a part and
    the upload of that part gives it back when it ends (done, failed or
    cancelled), so the parts being filled and those in flight, of every
    sink together, never hold more than ``limit`` bytes, whatever the
    number of sinks. A sink that holds room fills its part without waiting
    for room again, so waiting ends as soon as an upload does: no deadlock
    with more sinks than parts fit. One request larger than ``limit`` is
    let through alone. ``peak``: the most ever taken at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    def take(self, size: int) -> None:
        with self._cond:
            while self.used and self.used + size > self.limit:
                self._cond.wait()
            self.used += size
            self.peak = max(self.peak, self.used)

    def give(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()


class S3Sink:
    """Streams into an S3 object: one PUT when small, else a multipart upload.

    Parts are uploaded by worker threads while the dump goes on, at most
    ``in_flight`` parts at once, so memory stays at a few parts whatever the
    database size; with a ``budget`` (``MemoryBudget``) shared by several
    sinks, their parts (being filled and in flight) also stay within its
    limit together. A part is filled in place (one ``bytearray`` per part,
    handed to the upload as it is): no part-sized copy is made. A failure
    aborts the multipart upload so no orphan parts stay behind; with
    ``tolerate_failure`` it is remembered instead of raised, so the local
    copy can still complete.

    Checksums the server verifies, and where the SHA-256 of the whole object
    lives (the sidecar ``.sha256`` and the manifest hold it in every case):

    - one PUT: ``x-amz-checksum-sha256`` of the whole object and the
      ``x-amz-meta-sha256`` metadata;
    - multipart: a full-object CRC32 (``ChecksumType=FULL_OBJECT``, AWS since
      2025), each part carrying its own CRC32; S3 checks every part and the
      whole object at completion, and SDKs check it again on download.
      Metadata is fixed when the upload is created, before the SHA-256 is
      known, and a full-object checksum cannot be SHA-256 (S3 only combines
      SHA-256 per part), so a multipart object carries no sha256 metadata.
      A server that does not confirm FULL_OBJECT when the upload is created
      gets the previous scheme: SHA-256 per part and the composite checksum.

    After completion a HEAD checks the size and the checksum the server reports.
    """

    def __init__(self, client: Any, cfg: s3util.S3Config, key: str, *, tags: dict[str, str],
                 metadata: dict[str, str] | None = None, tolerate_failure: bool = False, in_flight: int = 3,
                 budget: MemoryBudget | None = None, size: int | None = None) -> None:
        self.client, self.cfg, self.key = client, cfg, key
        # S3 metadata is ASCII only (a name like clínica fails the upload): other values go percent-encoded
        self.tags, self.metadata = tags, {k: v if v.isascii() and v.isprintable() else quote(v, safe="")
                                          for k, v in (metadata or {}).items()}
        self.part_size = cfg.part_size_mb * 1024 * 1024
        self.tolerate_failure = tolerate_failure
        self.error: StorageError | None = None
        self.full_object = False  # multipart with a full-object CRC32 (else SHA-256 composite)
        self._part: bytearray | None = None  # the part being filled (written, not yet uploaded)
        self._filled = 0  # its bytes written (it may be sized larger: ``size``)
        self._size = size  # the object's size when known: each part made at its size at once
        self._written = 0
        self._budget = budget
        self._charged = 0  # what the part being filled took of the budget
        self._upload_id: str | None = None
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

    def write(self, chunk: bytes | memoryview) -> None:
        """Copy ``chunk`` into the part being filled (the caller may reuse its buffer); full parts go up."""
        if self.error:
            return
        view = memoryview(chunk)
        try:
            while len(view):
                if self._part is None:
                    self._begin_part()
                count = min(self.part_size - self._filled, len(view))
                end = self._filled + count
                self._part[self._filled:end] = view[:count]  # grows the part past what it was sized for
                self._filled, self._written, view = end, self._written + count, view[count:]
                if self._filled == self.part_size:
                    self._submit(*self._cut())
        except StorageError as exc:
            self._fail(exc)

    def _begin_part(self) -> None:
        """A new part; its room in the budget first (waits until the uploads in flight leave enough).

        The part is made at its final size at once (a whole part while the
        object's ``size`` is not known; the last is cut to what came), so a
        part of 4 MiB or more is mmapped from the start (glibc,
        ``fix_mmap_threshold``) and never grows through a thread's heap,
        which would keep the pages.
        """
        fix_mmap_threshold()
        if self._budget is not None:
            self._budget.take(self.part_size)
            self._charged = self.part_size
        left = self.part_size if self._size is None else self._size - self._written
        self._part = bytearray(min(self.part_size, max(left, 0)))
        self._filled = 0

    def _cut(self) -> tuple[bytearray, int]:
        """The part being filled, and its room in the budget, for the upload (which gives it back)."""
        part, charged = self._part, self._charged
        if part is not None and len(part) > self._filled:
            del part[self._filled:]  # sized for more than came
        self._part, self._charged, self._filled = None, 0, 0
        return part, charged

    def _release(self, charged: int) -> None:
        if charged and self._budget is not None:
            self._budget.give(charged)

    def _clear(self) -> None:
        """Drop the part being filled and give back its room."""
        self._release(self._cut()[1])

    def _create(self) -> None:
        """Start the multipart upload: full-object CRC32 when the server confirms it, else SHA-256 composite."""
        fix_mmap_threshold()
        args = dict(Bucket=self.cfg.bucket, Key=self.key, Tagging=urlencode(self.tags), Metadata=self.metadata,
                    **self.cfg.write_args())
        resp = None
        try:
            with s3util.s3_errors("create multipart upload", self.where):
                resp = self.client.create_multipart_upload(ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT", **args)
        except StorageError as exc:
            if exc.code not in _UNSUPPORTED:
                raise
        if resp is not None and resp.get("ChecksumType") == "FULL_OBJECT" and resp.get("ChecksumAlgorithm") == "CRC32":
            self._upload_id, self.full_object = resp["UploadId"], True
            return
        if resp is not None:  # created, but the server did not say it honours FULL_OBJECT: do not rely on it
            with contextlib.suppress(StorageError), s3util.s3_errors("abort multipart upload", self.where):
                # empty; on failure the next run's leftover cleanup aborts it
                self.client.abort_multipart_upload(Bucket=self.cfg.bucket, Key=self.key, UploadId=resp["UploadId"])
        with s3util.s3_errors("create multipart upload", self.where):
            resp = self.client.create_multipart_upload(ChecksumAlgorithm="SHA256", **args)
        self._upload_id, self.full_object = resp["UploadId"], False

    def _submit(self, part: bytearray, charged: int) -> None:
        """Upload ``part`` in the background; its room in the budget (``charged``) is given back when that ends."""
        try:
            if self._upload_id is None:
                self._create()
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3-part")
            for done in [f for f in self._futures if f.done()]:
                done.result()  # surface a failed part early
            self._slots.acquire()
        except BaseException:
            self._release(charged)
            raise
        number = len(self._futures) + 1
        future = self._pool.submit(self._upload_part, number, [part])
        del part
        self._futures.append(future)
        future.add_done_callback(lambda _done: self._part_ended(charged))  # also when cancelled (abort)

    def _part_ended(self, charged: int) -> None:
        self._slots.release()
        self._release(charged)

    def _upload_part(self, number: int, holder: list[bytearray]) -> dict[str, Any]:
        """Upload one part; the only reference to it is ``holder``'s, taken here: freed on return, before the budget hears of it."""
        data = holder.pop()
        if self.full_object:
            crc = zlib.crc32(data)
            check = {"ChecksumCRC32": _b64(crc.to_bytes(4, "big"))}
            extra = {"_crc": crc, "_len": len(data)}
        else:
            digest = hashlib.sha256(data).digest()
            check = {"ChecksumSHA256": _b64(digest)}
            extra = {"_digest": digest}
        with s3util.s3_errors(f"upload of part {number}", self.where):
            resp = self.client.upload_part(Bucket=self.cfg.bucket, Key=self.key, UploadId=self._upload_id,
                                           PartNumber=number, Body=data, **check)
        return {"PartNumber": number, "ETag": resp["ETag"], **check, **extra}

    def commit(self, digest: Digest) -> dict[str, Any]:
        if self.error:
            return {"uri": self.where, "error": str(self.error)}
        try:
            if self._upload_id is None:
                checksum = self._put_single(digest)
            else:
                checksum = self._complete()
            self._verify(digest.size, checksum)
        except StorageError as exc:
            self._fail(exc)
            return {"uri": self.where, "error": str(exc)}
        finally:
            if self._pool:
                self._pool.shutdown(wait=True)
        return {"uri": self.where, "bucket": self.cfg.bucket, "key": self.key, "size": digest.size,
                "storage_class": self.cfg.storage_class, "checksum": checksum,
                "sha256_metadata": checksum["algorithm"] == "SHA256" and checksum["type"] == "FULL_OBJECT"}

    def _put_single(self, digest: Digest) -> dict[str, str]:
        body, charged = self._cut()
        checksum = _b64(bytes.fromhex(digest.sha256))
        try:
            with s3util.s3_errors("upload", self.where):
                self.client.put_object(Bucket=self.cfg.bucket, Key=self.key, Body=body or b"", ChecksumSHA256=checksum,
                                       Tagging=urlencode(self.tags), Metadata={**self.metadata, "sha256": digest.sha256},
                                       **self.cfg.write_args())
        finally:
            del body
            self._release(charged)
        return {"algorithm": "SHA256", "type": "FULL_OBJECT", "value": checksum}

    def _complete(self) -> dict[str, str]:
        if self._filled:
            self._submit(*self._cut())
        parts = [f.result() for f in self._futures]
        if self.full_object:
            crc = 0
            for part in parts:
                crc = crc32_combine(crc, part.pop("_crc"), part.pop("_len"))
            checksum = {"algorithm": "CRC32", "type": "FULL_OBJECT", "value": _b64(crc.to_bytes(4, "big"))}
            whole = {"ChecksumCRC32": checksum["value"], "ChecksumType": "FULL_OBJECT"}
        else:
            composite = hashlib.sha256(b"".join(p.pop("_digest") for p in parts)).digest()
            checksum = {"algorithm": "SHA256", "type": "COMPOSITE", "value": _b64(composite) + f"-{len(parts)}"}
            whole = {}
        with s3util.s3_errors("complete multipart upload", self.where):
            self.client.complete_multipart_upload(Bucket=self.cfg.bucket, Key=self.key, UploadId=self._upload_id,
                                                  MultipartUpload={"Parts": parts}, **whole)
        self._upload_id = None
        return checksum

    def _verify(self, size: int, checksum: dict[str, str]) -> None:
        with s3util.s3_errors("verification (HEAD)", self.where):
            head = self.client.head_object(Bucket=self.cfg.bucket, Key=self.key, ChecksumMode="ENABLED")
        if head["ContentLength"] != size:
            raise StorageError(f"upload to {self.where} is {head['ContentLength']} bytes, expected {size}: "
                               "the object was removed; run the backup again.")
        reported = head.get(f"Checksum{checksum['algorithm']}")
        if reported and reported != checksum["value"]:
            raise StorageError(f"upload to {self.where} has {checksum['algorithm']} {reported}, expected "
                               f"{checksum['value']}: run the backup again.")

    def abort(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id:
            with contextlib.suppress(StorageError), s3util.s3_errors("abort multipart upload", self.where):
                # on failure the next run aborts leftovers (storage.S3Store.leftovers)
                self.client.abort_multipart_upload(Bucket=self.cfg.bucket, Key=self.key, UploadId=self._upload_id)
            self._upload_id = None
        self._clear()


# Answers of a server that does not know ChecksumType=FULL_OBJECT (or CRC32) on CreateMultipartUpload.
_UNSUPPORTED = frozenset({"InvalidArgument", "InvalidRequest", "NotImplemented", "400", "501"})

_CRC32_POLY = 0xEDB88320  # reflected IEEE polynomial, as zlib.crc32


def _gf2_times(matrix: Sequence[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_product(a: Sequence[int], b: Sequence[int]) -> list[int]:
    return [_gf2_times(a, column) for column in b]


_ZERO_BYTES: dict[int, list[int]] = {}


def _crc32_zeros(length: int) -> list[int]:
    """The GF(2) operator that runs a CRC-32 register over ``length`` zero bytes (cached: parts share a size)."""
    if length not in _ZERO_BYTES:
        step = [_CRC32_POLY] + [1 << (n - 1) for n in range(1, 32)]  # one zero bit
        for _bits in (2, 4, 8):
            step = _gf2_product(step, step)  # two, four, eight bits: one zero byte
        result = [1 << n for n in range(32)]  # identity
        remaining = length
        while remaining:
            if remaining & 1:
                result = _gf2_product(step, result)
            remaining >>= 1
            if remaining:
                step = _gf2_product(step, step)
        if len(_ZERO_BYTES) > 16:
            _ZERO_BYTES.clear()
        _ZERO_BYTES[length] = result
    return _ZERO_BYTES[length]


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A+B from crc32(A), crc32(B) and len(B), as zlib's crc32_combine (which Python does not expose).

    Each part's CRC is computed by its upload thread (S3 wants it per part);
    this joins them into the whole object's without hashing the bytes twice.
    """
    if length2 <= 0:
        return crc1
    return _gf2_times(_crc32_zeros(length2), crc1) ^ crc2


def upload_file(path: str, sink: "S3Sink", size: int, sha256: str) -> dict[str, Any]:
    """Upload a complete local file through ``sink``, re-hashing it on the way.

    A file that no longer matches its manifest is not uploaded: the sink is
    aborted and an IntegrityError raised.
    """
    hasher = Hasher()
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
                sink.write(chunk)
        digest = hasher.digest()
        if (digest.size, digest.sha256) != (size, sha256):
            raise IntegrityError(f"{path} no longer matches its manifest ({digest.size} bytes, SHA-256 {digest.sha256}; "
                                 f"expected {size} bytes, {sha256}): it was not uploaded. Check the disk, and do not "
                                 "count on this backup.")
        return sink.commit(digest)
    except OSError as exc:
        sink.abort()
        raise StorageError(f"cannot read {path}: {exc.strerror}.") from None
    except BaseException:
        sink.abort()
        raise


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


StageFailed = procs.ProcessFailed  # a program of the pipeline exited non-zero


def run(stages: Sequence[Sequence[str] | None], env: dict[str, str], sinks: Sequence[Sink], *,
        names: Sequence[str] | None = None,
        accept: Callable[[int, int, str], bool] | None = None) -> tuple[Digest, list[dict[str, Any]]]:
    """Run ``stages`` as a pipe (procs.Pipe), hash the last stage's output and feed it to every sink.

    On any failure (a program's exit status, a sink's error) every process is
    stopped, every sink aborted, and the error raised: nothing is left that
    looks complete. ``accept(index, status, stderr)`` may declare a non-zero
    status of the stage at ``index`` (of the stages run) a success, for
    programs whose status also carries warnings (GNU tar's 1: "a file changed
    as we read it"); the caller gets the program's whole stderr to report them.
    """
    hasher = Hasher()
    try:
        with procs.Pipe(stages, env=env, names=names) as pipe:
            out = pipe.stdout
            while True:
                chunk = out.read(CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
                for sink in sinks:
                    sink.write(chunk)
            pipe.wait(accept=accept)
        digest = hasher.digest()
        return digest, [sink.commit(digest) for sink in sinks]
    except BaseException:
        for sink in sinks:
            try:
                sink.abort()
            except Exception:  # pylint: disable=broad-except
                pass
        raise


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
    publish_staged(stage_file(path, data, mode), path)


def stage_file(path: str, data: bytes, mode: int = 0o600) -> str:
    """Write ``path``'s hidden partial file, synced, and return its name: the space is taken, nothing shows yet.

    ``publish_staged`` renames it into place, which needs no space: a commit
    point staged before other stores commit cannot fail later for a full disk.
    """
    directory, name = os.path.split(path)
    partial = os.path.join(directory, f".{name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as exc:
        raise StorageError(f"writing {path} failed: {exc.strerror}; check that the directory exists, free space "
                           "and permissions.") from None
    own_like_parent(partial)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, mode)
    except OSError as exc:
        remove_quietly(partial)
        raise StorageError(f"writing {path} failed: {exc.strerror}; check free space and permissions.") from None
    return partial


def publish_staged(partial: str, path: str) -> None:
    """Rename a file ``stage_file`` wrote into place (removed if that fails)."""
    try:
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
