# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that builds S3 clients and maps their errors.

Works with AWS S3 and S3-compatible stores (MinIO, SeaweedFS, Ceph) through
``endpoint_url``. Credentials come from options, the usual AWS environment
variables or a profile; they are never logged or returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import re
import threading
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.libs import optional

boto3, BOTO3 = optional("boto3", "boto3", "session")
botocore, BOTOCORE = optional("botocore", "boto3", "config", "exceptions")  # installed with boto3

STORAGE_CLASSES = (
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY",
)
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
# A call's total deadline lets its body move at this rate at least (256 KiB/s), besides the timeouts; and
# botocore's standard retry mode waits at most 20 s between two attempts.
MIN_RATE = 256 * 1024
MAX_BACKOFF_S = 20
# What botocore itself accepts (AWS is stricter: 3-63 lowercase letters, digits, '.', '-'), starting with one of
# them: anything else (a space, a path, an s3:// URI) fails at the first request, after the dump, otherwise.
BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def check_bucket_name(bucket: str | None, option: str) -> None:
    """A bucket name S3 can take, or a ConfigError naming ``option`` and the fix."""
    if not bucket:
        raise ConfigError(f"{option} is empty: set it to the bucket's name (e.g. doctorq-backups).")
    if not BUCKET_RE.match(bucket):
        raise ConfigError(f"{option} {bucket!r} is not a valid bucket name: give the bucket's name only (on AWS 3-63 "
                          "lowercase letters, digits, '.' and '-'), without s3:// or a path; a folder inside the "
                          "bucket goes in s3.prefix.")


def check_key_path(path: str, option: str, *, allow_empty: bool = True) -> None:
    """An S3 key (prefix) in plain ``a/b/c`` form, or a ConfigError naming ``option``.

    S3 resolves neither ``..`` nor ``.`` and keeps a leading or a doubled
    ``/`` as part of the key: such a key lands somewhere else than it reads,
    and listing, ``latest`` and retention would miss or misplace it.
    """
    if not path:
        if allow_empty:
            return
        raise ConfigError(f"{option} is empty: give the object's key after the bucket (s3://BUCKET/KEY).")
    if path.startswith("/"):
        raise ConfigError(f"{option} {path!r} has a leading '/': S3 keys do not start with one (it would become an "
                          f"empty first folder); write {path.lstrip('/')!r}.")
    segments = path.rstrip("/").split("/")
    if ".." in segments:
        raise ConfigError(f"{option} {path!r} has a '..' segment: S3 does not resolve it (the key would hold a real "
                          "'..' folder, outside the prefix the listing and retention search); name the folder itself.")
    if "" in segments or "." in segments:
        raise ConfigError(f"{option} {path!r} has an empty ('//') or '.' segment: S3 keeps those as part of the key; "
                          f"write it as {'/'.join(s for s in segments if s not in ('', '.'))!r}.")


def check_endpoint_url(url: str, option: str = "s3.endpoint_url") -> None:
    """An http(s) URL with a host (and a valid port), or a ConfigError naming ``option``."""
    parts = urlsplit(url)
    try:
        parts.port  # pylint: disable=pointless-statement  # raises on a port out of range or not a number
    except ValueError:
        raise ConfigError(f"{option} {url!r} has a bad port: use a number from 1 to 65535, e.g. "
                          "http://127.0.0.1:8333.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} {url!r} is not an http:// or https:// URL with a host: write it as "
                          "https://HOST[:PORT] (e.g. https://s3.eu-central-1.amazonaws.com) or http://HOST:PORT "
                          "(e.g. http://127.0.0.1:8333 for a local MinIO or SeaweedFS).")


def s3_argument_spec() -> dict[str, Any]:
    """The nested ``s3`` option, shared by every module (doc fragment ``doctorq.backup.s3``)."""
    from ansible.module_utils.basic import env_fallback  # pylint: disable=import-outside-toplevel
    return dict(
        type="dict",
        options=dict(
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default="postgresql"),
            endpoint_url=dict(type="str"),
            region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
            access_key=dict(type="str", no_log=False, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"])),
            secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"])),
            session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
            profile=dict(type="str", fallback=(env_fallback, ["AWS_PROFILE"])),
            validate_certs=dict(type="bool", default=True),
            addressing_style=dict(type="str", default="auto", choices=["auto", "path", "virtual"]),
            storage_class=dict(type="str", default="STANDARD", choices=list(STORAGE_CLASSES)),
            encryption=dict(type="str", default="AES256", choices=["AES256", "aws:kms", "none"]),
            kms_key_id=dict(type="str"),
            part_size_mb=dict(type="int", default=16),
            max_attempts=dict(type="int", default=5),
            timeout=dict(type="int", default=120),
        ),
    )


@dataclasses.dataclass(frozen=True)
class S3Config:
    """Where and how to store objects; built once from the ``s3`` option."""

    bucket: str
    prefix: str = "postgresql"
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    profile: str | None = None
    validate_certs: bool = True
    addressing_style: str = "auto"
    storage_class: str = "STANDARD"
    encryption: str = "AES256"
    kms_key_id: str | None = dataclasses.field(default=None, repr=False)
    part_size_mb: int = 16
    max_attempts: int = 5
    timeout: int = 120

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> "S3Config | None":
        if not params:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in params.items() if k in known and v is not None}
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Everything that can be known wrong before a run starts (a bad option fails then, not after the dump)."""
        check_bucket_name(self.bucket, "s3.bucket")
        check_key_path(self.prefix, "s3.prefix")
        if self.endpoint_url:
            check_endpoint_url(self.endpoint_url)
        if self.encryption == "aws:kms" and not self.kms_key_id:
            raise ConfigError("s3.encryption is aws:kms but s3.kms_key_id is empty: set the KMS key id or alias.")
        if self.part_size_mb < 5 or self.part_size_mb > 512:
            raise ConfigError("s3.part_size_mb must be between 5 and 512 (S3 parts are at least 5 MiB).")
        if self.max_attempts < 1:
            raise ConfigError(f"s3.max_attempts is {self.max_attempts}: use 1 (no retry) or more.")
        if self.timeout < 1:
            raise ConfigError(f"s3.timeout is {self.timeout}: use the seconds to wait for an answer from S3, at least 1 "
                              "(a silent endpoint must not hold the run).")
        if (self.access_key is None) != (self.secret_key is None):
            raise ConfigError("s3.access_key and s3.secret_key go together: set both, or neither to use the environment or a profile.")

    @property
    def clean_prefix(self) -> str:
        return self.prefix.strip("/")

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.clean_prefix, *parts) if p and p.strip("/"))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def write_args(self, data: bool = True) -> dict[str, Any]:
        """Storage class and server-side encryption for an object we write.

        Only backup data takes the configured class: checksum files and
        manifests stay in STANDARD so listing never hits an archived object.
        """
        args: dict[str, Any] = {"StorageClass": self.storage_class if data else "STANDARD"}
        if self.encryption == "AES256":
            args["ServerSideEncryption"] = "AES256"
        elif self.encryption == "aws:kms":
            args["ServerSideEncryption"] = "aws:kms"
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")


def require_boto3() -> None:
    BOTO3.require(StorageError, " for S3")


def s3_client(cfg: S3Config):
    """A boto3 S3 client with standard retries (jittered backoff) and timeouts that bound every request.

    ``max_attempts`` counts every attempt, the first included; each waits at
    most ``timeout`` seconds for the server to accept the connection (10 at
    most) and then for each read, so an endpoint that accepts and never answers
    fails a request within about max_attempts x timeout, plus the backoff.
    """
    require_boto3()
    style = cfg.addressing_style
    if style == "auto":
        style = "path" if cfg.endpoint_url else "virtual"
    config = botocore.config.Config(
        retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
        connect_timeout=min(10, cfg.timeout),
        read_timeout=cfg.timeout,
        s3={"addressing_style": style},
        # Only send/verify the extra CRC checksums when we ask for them: some
        # S3-compatible servers reject the newer defaults.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(profile_name=cfg.profile) if cfg.profile else boto3.session.Session()
    return _bounded(cfg, session.client(
        "s3",
        endpoint_url=cfg.endpoint_url or None,
        region_name=cfg.region or "us-east-1",
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key,
        aws_session_token=cfg.session_token,
        verify=cfg.validate_certs,
        config=config,
    ))


def call_deadline(cfg: S3Config, body_bytes: int = 0) -> float:
    """Seconds one S3 call may take in all: every attempt's timeouts and body at ``MIN_RATE``, the backoffs between."""
    attempt = min(10, cfg.timeout) + cfg.timeout + body_bytes / MIN_RATE
    return cfg.max_attempts * attempt + sum(min(MAX_BACKOFF_S, 2 ** i) for i in range(1, cfg.max_attempts))


def within(seconds: float, what: str, call: Callable[[], Any]) -> Any:
    """``call()``'s value, or a StorageError when it has not returned after ``seconds``.

    The timeouts botocore takes bound each read, not a call: a server that
    sends a byte now and then holds a request for ever. The call runs in a
    daemon thread, which is left behind when the deadline passes (its socket
    goes with the process); the run goes on with an error that says so.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            outcome["error"] = exc  # raised below, in the caller's thread

    worker = threading.Thread(target=target, name=f"doctorq-s3-{what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise StorageError(f"S3 {what} did not finish within {seconds:.0f} s: the server answers, but too slowly "
                           "(a byte now and then); check the server and the network, or raise s3.timeout if it is "
                           "only slow.")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _body_size(params: dict[str, Any]) -> int:
    body = params.get("Body")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    return int(params.get("ContentLength") or 0)


class BoundedBody:
    """A response body read with a deadline: each chunk must arrive within ``timeout`` plus its size at ``MIN_RATE``.

    One thread per body reads it ahead, at most two chunks (bounded memory),
    so a slow server costs a deadline, not a thread per read. Reads return
    what one chunk holds (fewer bytes than asked is a short read, as a raw
    stream does; the callers read to the end).
    """

    READ = 1 << 20

    def __init__(self, body: Any, cfg: S3Config, what: str) -> None:
        self._body = body
        self._what = what
        self._wait = cfg.timeout + self.READ / MIN_RATE
        self._chunks: queue.Queue = queue.Queue(maxsize=2)
        self._closed = threading.Event()
        self._rest = b""
        self._eof = False
        threading.Thread(target=self._pump, name="doctorq-s3-body", daemon=True).start()

    def _pump(self) -> None:
        try:
            while not self._closed.is_set():
                data = self._body.read(self.READ)
                if not self._offer(data) or not data:
                    return
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self._offer(exc)  # raised in the reader's thread
        finally:
            self._body.close()

    def _offer(self, item: Any) -> bool:
        """Hand ``item`` to the reader; False once the body is closed or nobody has read for a deadline."""
        while not self._closed.is_set():
            try:
                self._chunks.put(item, timeout=self._wait)
                return True
            except queue.Full:
                continue
        return False

    def _next(self) -> bytes:
        try:
            item = self._chunks.get(timeout=self._wait)
        except queue.Empty:
            raise StorageError(f"S3 {self._what} did not go on for {self._wait:.0f} s: the server answers, but too "
                               "slowly (a byte now and then); check the server and the network, or raise s3.timeout "
                               "if it is only slow.") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def read(self, amt: int | None = None) -> bytes:
        if amt is None:
            parts = [self._rest]
            while not self._eof:
                chunk = self._next()
                self._eof = not chunk
                parts.append(chunk)
            self._rest = b""
            return b"".join(parts)
        if not self._rest and not self._eof:
            self._rest = self._next()
            self._eof = not self._rest
        data, self._rest = self._rest[:amt], self._rest[amt:]
        return data

    def close(self) -> None:
        self._closed.set()


def _bounded(cfg: S3Config, client: Any) -> Any:
    """``client`` with a total deadline on every call (``call_deadline``) and on every read of a body it returns.

    Every generated method and paginator of a botocore client goes through
    its ``_make_api_call``, so one wrapper on the instance bounds them all.
    """
    make_api_call = client._make_api_call  # pylint: disable=protected-access

    def bounded_call(operation: str, params: dict[str, Any]) -> Any:
        response = within(call_deadline(cfg, _body_size(params)), operation,
                          lambda: make_api_call(operation, params))
        if isinstance(response, dict) and hasattr(response.get("Body"), "read"):
            response["Body"] = BoundedBody(response["Body"], cfg, f"{operation} (reading the body)")
        return response

    client._make_api_call = bounded_call  # pylint: disable=protected-access
    return client


_HINTS = {
    "NoSuchBucket": "the bucket does not exist: create it (the storage role does) or fix s3.bucket",
    "InvalidAccessKeyId": "the access key is unknown to the server: check s3.access_key",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check s3.secret_key",
    "AccessDenied": "the credentials lack permission for this action: check the bucket policy / IAM",
    "Forbidden": "the credentials lack permission or are wrong: check s3.access_key / s3.secret_key",
    "403": "the credentials lack permission or are wrong: check s3.access_key / s3.secret_key",
    "NoSuchKey": "the object does not exist: list backups with backup_info",
    "404": "the object or bucket does not exist",
    "InvalidObjectState": "the object is in an archive tier (GLACIER/DEEP_ARCHIVE): restore it first",
    "BadDigest": "the bytes received by the server do not match their checksum: retry the run",
    "XAmzContentSHA256Mismatch": "the bytes received by the server do not match their checksum: retry the run",
    "NotImplemented": "this S3-compatible server does not implement this feature",
    "MethodNotAllowed": "this S3-compatible server does not allow this request",
}


def error_code(exc: BaseException) -> str | None:
    if botocore is not None and isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


@contextlib.contextmanager
def s3_errors(action: str, where: str, expected: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Turn botocore failures into one ``StorageError`` that says what to do.

    An answer whose code is in ``expected`` (a lifecycle the bucket does not
    have, a bucket that does not exist yet) is no failure: it is put in the
    list the ``with`` statement yields, and the block ends there.
    """
    require_boto3()
    answered: list[str] = []
    try:
        yield answered
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc) or "unknown"
        if code in expected:
            answered.append(code)
            return
        msg = exc.response.get("Error", {}).get("Message") or ""
        hint = _HINTS.get(code, "see the server's message")
        raise StorageError(f"S3 {action} failed for {where}: {code} {msg}".rstrip() + f"; {hint}.", code=code) from None
    except botocore.exceptions.NoCredentialsError:
        raise StorageError(
            f"S3 {action} failed for {where}: no credentials found; set s3.access_key/s3.secret_key, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or s3.profile."
        ) from None
    except botocore.exceptions.ReadTimeoutError:
        raise StorageError(
            f"S3 {action} failed for {where}: the endpoint accepted the connection but did not answer in time "
            "(ReadTimeoutError, every attempt); check the server and the network, or raise s3.timeout if it is "
            "only slow."
        ) from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ConnectionClosedError) as exc:
        raise StorageError(
            f"S3 {action} failed for {where}: the endpoint cannot be reached ({type(exc).__name__}); "
            "check s3.endpoint_url, the network and the server."
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise StorageError(f"S3 {action} failed for {where}: {exc}.") from None
