# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest as the physical engine: configuration, commands, catalog, recoverable window.

pgBackRest does the hard parts (parallel asynchronous WAL archiving to S3,
full/differential/incremental backups, retention, restore); this file
configures and drives it and folds it into the collection's reporting:
the same run log, lock, webhook and metrics as the logical backups.

Secrets: the repository key, secret and cipher passphrase live in the
pgBackRest configuration file (0640, owned by the database OS user, because
PostgreSQL's ``archive_command`` must read them) or reach pgBackRest through
its ``PGBACKREST_*`` environment variables; never argv, logs or results.

pgBackRest always runs as the database OS user (through procs' ``user=``, so
``setpriv`` when we are root): it must own what it writes in the data
directory and the spool.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import json
import os
import pwd
import re
import shutil
import socket
import tempfile
import urllib.parse
from typing import IO, Any, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, iso, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples

DEFAULT_CONFIG = "/etc/pgbackrest/pgbackrest.conf"
DEFAULT_USER = "postgres"
# pgbackrest_backup's kinds and pgBackRest's backup types.
KINDS = {"physical_full": "full", "differential": "diff", "incremental": "incr"}
TYPE_NAMES = {"full": "physical_full", "diff": "differential", "incr": "incremental"}
# How far back to look for the newest commit in the archived WAL (segments).
WAL_LOOKBACK = 8


class PgBackRestError(DoctorqError):
    """pgBackRest refused or failed; the message carries its ERROR lines and what to check."""

    def __init__(self, msg: str, code: int | None = None) -> None:
        super().__init__(msg)
        self.code = code


def pgbackrest_argument_spec() -> dict[str, Any]:
    """Options shared by every module that drives pgBackRest (doc fragment ``doctorq.backup.pgbackrest``)."""
    return dict(
        stanza=dict(type="str", default="main"),
        pgbackrest_config=dict(type="path", default=DEFAULT_CONFIG),
        pgbackrest_user=dict(type="str", default=DEFAULT_USER),
    )


# --------------------------------------------------------------------------
# configuration


@dataclasses.dataclass(frozen=True)
class Repo:
    """An S3 repository: where pgBackRest keeps backups and WAL (``repo1-*``)."""

    bucket: str
    path: str
    endpoint: str
    region: str = "us-east-1"
    port: int | None = None
    uri_style: str = "host"
    verify_tls: bool = True
    ca_file: str | None = None
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    kms_key_id: str | None = dataclasses.field(default=None, repr=False)
    cipher_pass: str | None = dataclasses.field(default=None, repr=False)
    storage_class: str | None = None

    @classmethod
    def from_s3(cls, cfg: S3Config, path: str, *, ca_file: str | None = None,
                cipher_pass: str | None = None) -> "Repo":
        """The repository in the same bucket as the logical backups, under its own path.

        pgBackRest speaks S3 over TLS only, so an ``http://`` endpoint is
        refused here rather than failing later with a TLS error.
        """
        if cfg.endpoint_url:
            url = urllib.parse.urlsplit(cfg.endpoint_url if "://" in cfg.endpoint_url else "https://" + cfg.endpoint_url)
            if url.scheme != "https":
                raise ConfigError(f"s3.endpoint_url {cfg.endpoint_url} is not https: pgBackRest talks to S3 over TLS only; "
                                  "put the server behind TLS (SeaweedFS: -s3.cert.file/-s3.key.file) and use https://.")
            if not url.hostname:
                raise ConfigError(f"s3.endpoint_url {cfg.endpoint_url} has no host name.")
            endpoint, port = url.hostname, url.port
        else:
            endpoint, port = f"s3.{cfg.region or 'us-east-1'}.amazonaws.com", None
        style = cfg.addressing_style
        if style == "auto":
            style = "path" if cfg.endpoint_url else "virtual"
        if cfg.encryption == "aws:kms" and not cfg.kms_key_id:
            raise ConfigError("s3.encryption is aws:kms but s3.kms_key_id is empty: set the KMS key id.")
        return cls(bucket=cfg.bucket, path="/" + path.strip("/"), endpoint=endpoint, region=cfg.region or "us-east-1",
                   port=port if port not in (None, 443) else None, uri_style="path" if style == "path" else "host",
                   verify_tls=cfg.validate_certs, ca_file=ca_file, access_key=cfg.access_key,
                   secret_key=cfg.secret_key, session_token=cfg.session_token,
                   kms_key_id=cfg.kms_key_id if cfg.encryption == "aws:kms" else None,
                   cipher_pass=cipher_pass, storage_class=None)

    def uri(self, *parts: str) -> str:
        return "s3://" + "/".join(p.strip("/") for p in (self.bucket, self.path, *parts) if p.strip("/"))


@dataclasses.dataclass(frozen=True)
class Stanza:
    """One PostgreSQL cluster as pgBackRest sees it, and how backups of it are kept."""

    name: str = "main"
    pg_data: str = "/var/lib/postgresql/15/main"
    pg_port: int = 5432
    pg_socket_path: str | None = "/var/run/postgresql"
    pg_user: str | None = None
    retention_days: int = 7
    retention_diff: int | None = None
    process_max: int = 2
    archive_async: bool = True
    spool_path: str = "/var/spool/pgbackrest"
    archive_push_queue_max: str | None = None
    log_path: str = "/var/log/pgbackrest"
    lock_path: str = "/tmp/pgbackrest"
    compress_type: str = "zst"
    compress_level: int = 3
    bundle: bool = True
    archive_timeout: int = 60


def _value(name: str, value: Any) -> str:
    text = "y" if value is True else "n" if value is False else str(value)
    if any(ch in text for ch in "\n\r\x00"):
        raise ConfigError(f"the pgBackRest setting {name} contains a line break: refusing to write it.")
    return text


def conf_settings(stanza: Stanza, repo: Repo, *, secrets: bool = True) -> dict[str, dict[str, Any]]:
    """``{section: {option: value}}`` of pgbackrest.conf; without ``secrets`` they must come from the environment."""
    g: dict[str, Any] = {
        "repo1-type": "s3",
        "repo1-path": repo.path,
        "repo1-s3-bucket": repo.bucket,
        "repo1-s3-endpoint": repo.endpoint,
        "repo1-s3-region": repo.region,
        "repo1-s3-uri-style": repo.uri_style,
    }
    if repo.port:
        g["repo1-storage-port"] = repo.port
    if not repo.verify_tls:
        g["repo1-storage-verify-tls"] = False
    if repo.ca_file:
        g["repo1-storage-ca-file"] = repo.ca_file
    if not repo.access_key and not repo.secret_key:
        # No keys given: the instance's IAM role (EC2/ECS metadata), as the AWS SDKs do.
        g["repo1-s3-key-type"] = "auto"
    elif secrets:
        g["repo1-s3-key"] = repo.access_key
        g["repo1-s3-key-secret"] = repo.secret_key
        if repo.session_token:
            g["repo1-s3-token"] = repo.session_token
    if repo.kms_key_id:
        g["repo1-s3-kms-key-id"] = repo.kms_key_id
    if repo.cipher_pass:
        g["repo1-cipher-type"] = "aes-256-cbc"
        if secrets:
            g["repo1-cipher-pass"] = repo.cipher_pass
    # time-based retention keeps the full backups needed to recover to any
    # point of the last N days, and the WAL from the oldest of them on
    g["repo1-retention-full-type"] = "time"
    g["repo1-retention-full"] = stanza.retention_days
    if stanza.retention_diff:
        g["repo1-retention-diff"] = stanza.retention_diff
    if stanza.bundle:
        g["repo1-bundle"] = True
    g.update({
        "process-max": stanza.process_max,
        "compress-type": stanza.compress_type,
        "compress-level": stanza.compress_level,
        "archive-async": stanza.archive_async,
        "archive-timeout": stanza.archive_timeout,
        "spool-path": stanza.spool_path,
        "log-path": stanza.log_path,
        "log-level-file": "info",
        "lock-path": stanza.lock_path,
        "start-fast": True,
    })
    if stanza.archive_push_queue_max:
        g["archive-push-queue-max"] = stanza.archive_push_queue_max
    s: dict[str, Any] = {"pg1-path": stanza.pg_data, "pg1-port": stanza.pg_port}
    if stanza.pg_socket_path:
        s["pg1-socket-path"] = stanza.pg_socket_path
    if stanza.pg_user:
        s["pg1-user"] = stanza.pg_user
    return {"global": g, stanza.name: s}


def render_conf(stanza: Stanza, repo: Repo, *, secrets: bool = True) -> str:
    """pgbackrest.conf text. The role's template writes the same settings (a unit test compares them)."""
    lines = ["# pgBackRest configuration written by doctorq.backup; changes are overwritten.",
             "# It holds repository credentials: keep it 0640, owned by the database OS user."]
    for section, options in conf_settings(stanza, repo, secrets=secrets).items():
        lines += ["", f"[{section}]"]
        lines += [f"{key}={_value(key, value)}" for key, value in options.items() if value is not None]
    return "\n".join(lines) + "\n"


def secret_env(repo: Repo) -> dict[str, str]:
    """The repository secrets as pgBackRest's environment variables (for a configuration written without them)."""
    env = {}
    if repo.access_key is not None:
        env["PGBACKREST_REPO1_S3_KEY"] = repo.access_key
    if repo.secret_key is not None:
        env["PGBACKREST_REPO1_S3_KEY_SECRET"] = repo.secret_key
    if repo.session_token:
        env["PGBACKREST_REPO1_S3_TOKEN"] = repo.session_token
    if repo.cipher_pass:
        env["PGBACKREST_REPO1_CIPHER_PASS"] = repo.cipher_pass
    return env


def write_conf(path: str, text: str, user: str = DEFAULT_USER) -> bool:
    """Write the configuration 0640, owned by ``user``, atomically; True when it changed."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o750, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pgbackrest.", dir=directory)
    try:
        os.fchmod(fd, 0o640)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def archive_command(config: str, stanza: str, binary: str = "pgbackrest") -> str:
    """PostgreSQL's ``archive_command``: pgBackRest pushes (asynchronously when configured) from the spool."""
    return f"{binary} --config={config} --stanza={stanza} archive-push %p"


def read_conf(path: str) -> configparser.ConfigParser:
    """Parse pgbackrest.conf (an ini file; a repeated key keeps its last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"pgBackRest configuration {path} does not exist: apply the doctorq.backup.pgbackrest role "
                          "or set pgbackrest_config.") from None
    except PermissionError:
        raise ConfigError(f"cannot read the pgBackRest configuration {path}: run as root (become: true) or as the "
                          "database OS user.") from None
    except configparser.Error as exc:
        raise ConfigError(f"pgBackRest configuration {path} cannot be parsed: {exc}.") from None
    return parser


# --------------------------------------------------------------------------
# running pgBackRest


def tool_env() -> dict[str, str]:
    """A small, predictable environment for the programs we run: C locale, UTC, no inherited PG*/PGBACKREST_*."""
    return {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}


_HINTS = (
    ("[055]", "the stanza or its repository is missing: run stanza-create (the pgbackrest role does)"),
    ("[082]", "WAL is not reaching the repository: check archive_mode/archive_command and run pgbackrest check"),
    ("[087]", "archive_mode/archive_command are not set for pgBackRest: apply the pgbackrest role"),
    ("[075]", "no backup is old enough for that target: list backups and the recoverable window with pg_backup_info"),
    ("[056]", "PostgreSQL is not reachable for pgBackRest: check pg1-path/pg1-port/pg1-socket-path"),
    ("[038]", "PostgreSQL is still running: stop it before restoring into its data directory"),
    ("[040]", "the target directory is not empty: restore into an empty directory (or use delta on the live one)"),
    ("[028]", "the repository belongs to another cluster (system id): check repo path and stanza"),
    ("[049]", "permission denied: pgBackRest runs as the database OS user, which must own the paths"),
    ("SignatureDoesNotMatch", "the repository secret key does not match the access key: check the secret"),
    ("InvalidAccessKeyId", "the repository access key is unknown to the server: check the key"),
    ("403", "the repository credentials are wrong or lack permission: check the key and secret"),
    ("HostConnectError", "the S3 endpoint cannot be reached: check the endpoint, port and TLS"),
    ("TLS", "TLS failed: check the endpoint's certificate (CA file) or repo1-storage-verify-tls"),
)


class PgBackRest:
    """Runs pgBackRest commands for one stanza as the database OS user."""

    def __init__(self, config: str = DEFAULT_CONFIG, stanza: str = "main", user: str = DEFAULT_USER, *,
                 env: dict[str, str] | None = None, binary: str | None = None) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", stanza or ""):
            raise ConfigError(f"stanza {stanza!r} is not a pgBackRest stanza name (letters, digits, _ . -).")
        self.config, self.stanza, self.user = config, stanza, user
        self._secret_env = dict(env or {})
        self.binary = binary or shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
        if not os.access(self.binary, os.X_OK):
            raise ConfigError("pgbackrest is not installed: apply the doctorq.backup.pgbackrest role "
                              "(apt-get install pgbackrest).")

    def argv(self, command: str, *options: str, params: Sequence[str] = ()) -> list[str]:
        """pgBackRest's own argv; ``run`` starts it as the database OS user."""
        # JSON output must stay clean: info logs errors to stderr only; the others log progress to stdout
        levels = (["--log-level-console=off", "--log-level-stderr=error"] if command == "info"
                  else ["--log-level-console=info", "--log-level-stderr=off"])
        return [self.binary, f"--config={self.config}", f"--stanza={self.stanza}", *levels, *options, command, *params]

    def env(self) -> dict[str, str]:
        env = tool_env()
        env.update(self._secret_env)
        return env

    def scrub(self, text: str) -> str:
        for secret in self._secret_env.values():
            if secret:
                text = text.replace(secret, "<redacted>")
        return text

    def run(self, command: str, *options: str, params: Sequence[str] = (), timeout: float = 24 * 3600,
            check: bool = True) -> procs.Done:
        """Run one command as the database OS user; on failure raise PgBackRestError with its ERROR lines and a hint."""
        argv = self.argv(command, *options, params=params)
        try:
            done = procs.run(argv, env=self.env(), user=self.user, timeout=timeout, check=False, name="pgbackrest")
        except procs.ProcessFailed as exc:  # it could not start, or ran past its deadline (and was killed)
            raise PgBackRestError(f"pgbackrest {command} for stanza {self.stanza!r}: {self.scrub(str(exc))}") from None
        done.stdout, done.stderr = self.scrub(done.stdout), self.scrub(done.stderr)
        if check and done.status != 0:
            raise PgBackRestError(self.explain(command, done), code=done.status)
        return done

    def explain(self, command: str, done: procs.Done) -> str:
        text = done.stdout + "\n" + done.stderr
        errors = [line.split("ERROR:", 1)[1].strip() for line in text.splitlines() if "ERROR:" in line]
        detail = "; ".join(errors[:3]) or " ".join(text.split())[-400:] or "no output"
        hint = next((h for key, h in _HINTS if key in text), "see pgBackRest's log in its log-path")
        return (f"pgbackrest {command} for stanza {self.stanza!r} failed (exit {done.status}): {detail}. "
                f"What to do: {hint}.")

    @staticmethod
    def progress(done: procs.Done) -> list[str]:
        """pgBackRest's INFO/WARN lines worth a run log line (not the option dump of 'command begin')."""
        lines = []
        for line in (done.stdout + "\n" + done.stderr).splitlines():
            match = re.search(r"\b(INFO|WARN|ERROR):\s+(.*)$", line)
            if match and "command begin" not in match.group(2):
                lines.append(f"{match.group(1)}: {match.group(2)}" if match.group(1) != "INFO" else match.group(2))
        return lines

    # -- commands ------------------------------------------------------------
    def info(self) -> "StanzaInfo":
        proc = self.run("info", "--output=json", timeout=600)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise PgBackRestError(f"pgbackrest info printed no JSON: {proc.stdout[:200]!r}") from None
        info = StanzaInfo.parse(data, self.stanza)
        if info.status_code in (1, 3, 99):
            # 1 missing stanza path, 3 missing stanza data, 99 other (the repository could not be read)
            text = self.scrub(info.repo_error or info.status)
            code = re.search(r"<Code>([^<]+)</Code>", text)
            detail = text.splitlines()[0] + (f" ({code.group(1)})" if code else "")
            hint = next((h for key, h in _HINTS if key in text), None)
            if hint is None:
                hint = ("create the stanza (pgbackrest stanza-create; the pgbackrest role does)" if info.status_code in (1, 3)
                        else "check the repository settings in " + self.config)
            raise PgBackRestError(f"pgbackrest info for stanza {self.stanza!r}: {info.status} - {detail}. What to do: {hint}.",
                                  code=info.status_code)
        return info

    def stanza_create(self) -> list[str]:
        return self.progress(self.run("stanza-create", timeout=600))

    def check(self) -> list[str]:
        """Switches WAL and waits until it is archived: proves archiving works end to end."""
        return self.progress(self.run("check", timeout=900))

    def archive_get(self, segment: str, dest: str) -> bool:
        """Fetch one WAL segment; False when the repository does not have it."""
        done = self.run("archive-get", params=(segment, dest), timeout=600, check=False)
        if done.status == 0:
            return True
        if done.status == 1:  # pgBackRest: segment not found
            return False
        raise PgBackRestError(self.explain("archive-get", done), code=done.status)


# --------------------------------------------------------------------------
# the catalog: pgbackrest info --output=json


def _ts(epoch: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch is not None else None


@dataclasses.dataclass(frozen=True)
class PhysicalBackup:
    label: str
    type: str
    prior: str | None
    started: dt.datetime
    stopped: dt.datetime
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    database_size: int
    delta: int
    repo_size: int
    repo_delta: int
    error: bool = False

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "PhysicalBackup":
        info = raw.get("info") or {}
        repo = info.get("repository") or {}
        archive = raw.get("archive") or {}
        lsn = raw.get("lsn") or {}
        stamp = raw.get("timestamp") or {}
        return cls(label=raw["label"], type=raw["type"], prior=raw.get("prior"), started=_ts(stamp.get("start")),
                   stopped=_ts(stamp.get("stop")), wal_start=archive.get("start"), wal_stop=archive.get("stop"),
                   lsn_start=lsn.get("start"), lsn_stop=lsn.get("stop"), database_size=int(info.get("size") or 0),
                   delta=int(info.get("delta") or 0), repo_size=int(repo.get("size") or 0),
                   repo_delta=int(repo.get("delta") or 0), error=bool(raw.get("error")))

    @property
    def kind(self) -> str:
        return TYPE_NAMES.get(self.type, self.type)

    @property
    def timeline(self) -> int | None:
        return int(self.wal_start[:8], 16) if self.wal_start and re.match(r"^[0-9A-F]{8}", self.wal_start) else None

    @property
    def consistent_from(self) -> dt.datetime:
        """Earliest recovery target this backup can serve: after its stop (pgBackRest keeps whole seconds)."""
        return self.stopped + dt.timedelta(seconds=1)

    def summary(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "type": self.type, "prior": self.prior,
                "started_at": iso(self.started), "finished_at": iso(self.stopped),
                "duration_s": (self.stopped - self.started).total_seconds(),
                "database_size": self.database_size, "delta": self.delta, "repo_size": self.repo_size,
                "repo_delta": self.repo_delta, "wal_start": self.wal_start, "wal_stop": self.wal_stop,
                "lsn_start": self.lsn_start, "lsn_stop": self.lsn_stop, "error": self.error}


@dataclasses.dataclass(frozen=True)
class StanzaInfo:
    name: str
    status_code: int
    status: str
    backups: tuple[PhysicalBackup, ...]
    archive_min: str | None
    archive_max: str | None
    pg_version: str | None
    system_id: int | None
    cipher: str | None
    repo_error: str | None = None

    @classmethod
    def parse(cls, data: Any, stanza: str) -> "StanzaInfo":
        entry = next((s for s in data if isinstance(s, dict) and s.get("name") == stanza), None) if isinstance(data, list) else None
        if entry is None:
            raise PgBackRestError(f"pgbackrest info does not list stanza {stanza!r}: check the stanza name.")
        dbs = entry.get("db") or []
        current = dbs[-1] if dbs else {}
        # WAL of the current cluster (after an upgrade, older db ids hold the old cluster's WAL)
        archives = [a for a in entry.get("archive") or [] if (a.get("database") or {}).get("id") == current.get("id")]
        archive = archives[-1] if archives else {}
        backups = tuple(sorted((PhysicalBackup.parse(b) for b in entry.get("backup") or []
                                if (b.get("database") or {}).get("id") == current.get("id")),
                               key=lambda b: (b.stopped, b.label)))
        status = entry.get("status") or {}
        repo_errors = [r["status"]["message"] for r in entry.get("repo") or []
                       if (r.get("status") or {}).get("code") not in (0, 2, None) and r["status"].get("message")]
        return cls(name=stanza, status_code=int(status.get("code", -1)), status=status.get("message") or "",
                   backups=backups, archive_min=archive.get("min"), archive_max=archive.get("max"),
                   pg_version=current.get("version"), system_id=current.get("system-id"), cipher=entry.get("cipher"),
                   repo_error=repo_errors[0] if repo_errors else None)

    @property
    def ok(self) -> bool:
        """The repository answers and the stanza exists (2 = no backup yet is fine)."""
        return self.status_code in (0, 2)

    def usable(self) -> list[PhysicalBackup]:
        return [b for b in self.backups if not b.error]

    def find(self, label: str) -> PhysicalBackup | None:
        return next((b for b in self.backups if b.label == label), None)


# --------------------------------------------------------------------------
# the recoverable window


COMMIT_RE = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (UTC|[+-]\d\d(?::?\d\d)?)")


def last_commit_in_waldump(text: str) -> dt.datetime | None:
    """Time of the last transaction commit/abort in ``pg_waldump`` output (run with TZ=UTC)."""
    found = None
    for match in COMMIT_RE.finditer(text):
        stamp, zone = match.groups()
        when = dt.datetime.strptime(stamp + ("" if "." in stamp else ".0"), "%Y-%m-%d %H:%M:%S.%f")
        if zone == "UTC":
            when = when.replace(tzinfo=dt.timezone.utc)
        else:
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            when = when.replace(tzinfo=dt.timezone(sign * offset))
        found = when.astimezone(dt.timezone.utc)
    return found


def previous_segment(name: str, segments_per_xlogid: int = 0x100) -> str | None:
    """The WAL segment before ``name`` on the same timeline (16 MiB segments by default)."""
    if not re.match(r"^[0-9A-F]{24}$", name):
        return None
    tli, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    if seg > 0:
        seg -= 1
    elif log > 0:
        log, seg = log - 1, segments_per_xlogid - 1
    else:
        return None
    return f"{tli:08X}{log:08X}{seg:08X}"


def pg_bin(tool: str, major: str | None, bin_dir: str | None = None) -> str:
    candidates = [os.path.join(bin_dir, tool)] if bin_dir else []
    if major:
        candidates.append(f"/usr/lib/postgresql/{major}/bin/{tool}")
    found = shutil.which(tool)
    if found:
        candidates.append(found)
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise ConfigError(f"{tool} of PostgreSQL {major or '?'} not found ({', '.join(candidates) or 'no candidates'}): "
                      f"install postgresql-{major or '<major>'} or set pg_bin_dir.")


class _OwnedTmp:
    """A private temporary directory the database OS user can write into (for archive-get)."""

    def __init__(self, user: str, prefix: str) -> None:
        self.user, self.prefix = user, prefix
        self.path = ""

    def __enter__(self) -> str:
        self.path = tempfile.mkdtemp(prefix=self.prefix)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self.user)
            os.chown(self.path, owner.pw_uid, owner.pw_gid)
        os.chmod(self.path, 0o700)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def last_archived_commit(pgbr: PgBackRest, info: StanzaInfo, *, bin_dir: str | None = None,
                         lookback: int = WAL_LOOKBACK) -> dt.datetime | None:
    """Time of the newest transaction commit in the archived WAL: the end of the recoverable window.

    A recovery to a time needs a commit after it in the WAL (PostgreSQL
    stops there; without one it ends with 'recovery ended before configured
    recovery target was reached'). Reads the newest archived segments with
    ``pgbackrest archive-get`` and ``pg_waldump``, newest first.
    """
    if not info.archive_max:
        return None
    waldump = pg_bin("pg_waldump", info.pg_version, bin_dir)
    with _OwnedTmp(pgbr.user, "doctorq-wal-") as work:
        segment: str | None = info.archive_max
        for _step in range(lookback):
            if segment is None or (info.archive_min and segment < info.archive_min):
                break
            dest = os.path.join(work, segment)
            if pgbr.archive_get(segment, dest):
                # check=False: pg_waldump ends with an error at the first invalid record of a segment that
                # was archived before it filled up; the records before it are what we read
                dump = procs.run([waldump, dest], env=tool_env(), user=pgbr.user, timeout=300, check=False)
                when = last_commit_in_waldump(dump.stdout)
                os.unlink(dest)
                if when is not None:
                    return when
            segment = previous_segment(segment)
        return None


def parse_lsn(text: str) -> int:
    high, low = text.split("/", 1)
    return (int(high, 16) << 32) | int(low, 16)


def parse_history(text: str) -> dict[int, int]:
    """A timeline history file: ``{parent timeline: LSN where it was left}``."""
    ends = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and "/" in fields[1]:
            ends[int(fields[0])] = parse_lsn(fields[1])
    return ends


@dataclasses.dataclass(frozen=True)
class Lineage:
    """The newest timeline in the archive and where its ancestors were left.

    A recovery follows the newest timeline (PostgreSQL's default). A backup
    can start it only if it was taken on that timeline, or on an ancestor and
    finished before the fork: after a point-in-time recovery, the backups of
    the abandoned branch (such as its safety backup) cannot.
    """

    latest: int
    ends: dict[int, int]

    def on_it(self, backup: "PhysicalBackup") -> bool:
        if not backup.wal_start or not re.match(r"^[0-9A-F]{8}", backup.wal_start):
            return True
        tli = int(backup.wal_start[:8], 16)
        if tli == self.latest:
            return True
        if tli not in self.ends:
            return False
        return backup.lsn_stop is None or parse_lsn(backup.lsn_stop) <= self.ends[tli]


def lineage(pgbr: PgBackRest, info: StanzaInfo) -> Lineage:
    """Read the newest timeline's history file from the repository (timeline 1 has none)."""
    if not info.archive_max or not re.match(r"^[0-9A-F]{8}", info.archive_max):
        return Lineage(1, {})
    latest = int(info.archive_max[:8], 16)
    if latest == 1:
        return Lineage(1, {})
    with _OwnedTmp(pgbr.user, "doctorq-tli-") as work:
        name = f"{latest:08X}.history"
        dest = os.path.join(work, name)
        if not pgbr.archive_get(name, dest):
            raise PgBackRestError(f"the repository has WAL of timeline {latest} but not its history file {name}: "
                                  "check the archive with pgbackrest info.")
        with open(dest, encoding="utf-8", errors="replace") as handle:
            return Lineage(latest, parse_history(handle.read()))


@dataclasses.dataclass(frozen=True)
class Window:
    """The times a point-in-time recovery can reach: from the oldest backup's end to the newest archived commit."""

    start: dt.datetime | None
    end: dt.datetime | None
    oldest_backup: str | None
    newest_backup: str | None

    def contains(self, when: dt.datetime) -> bool:
        return self.start is not None and self.end is not None and self.start <= when <= self.end

    def describe(self) -> str:
        if self.start is None:
            return "no backup to recover from"
        end = iso_us(self.end) if self.end else "unknown (no commit found in the newest archived WAL)"
        return f"{iso_us(self.start)} to {end}"

    def summary(self) -> dict[str, Any]:
        return {"start": iso_us(self.start) if self.start else None, "end": iso_us(self.end) if self.end else None,
                "oldest_backup": self.oldest_backup, "newest_backup": self.newest_backup,
                "seconds": (self.end - self.start).total_seconds() if self.start and self.end and self.end > self.start else 0}


def window_of(info: StanzaInfo, last_commit: dt.datetime | None, backup_set: str | None = None,
              line: Lineage | None = None) -> Window:
    """From just after the oldest usable (or the chosen) backup ended to just before the newest archived commit.

    PostgreSQL stops a time-targeted recovery before the first commit later
    than the target; a target at or after the newest archived commit never
    finds one and the recovery fails. So the last reachable target is one
    microsecond before that commit (which is then not replayed). Only
    backups on the newest timeline's line count (see ``Lineage``).
    """
    end = last_commit - dt.timedelta(microseconds=1) if last_commit else None
    usable = [b for b in info.usable() if line is None or line.on_it(b)]
    if backup_set:
        chosen = info.find(backup_set)
        if chosen is None or chosen.error:
            raise ConfigError(f"backup set {backup_set!r} is not a usable backup of stanza {info.name!r}: "
                              f"known are {', '.join(b.label for b in info.usable()) or 'none'}.")
        usable = [chosen]
    if not usable:
        return Window(None, end, None, None)
    start = usable[0].consistent_from
    return Window(start, end if end is None or end >= start else None, usable[0].label, usable[-1].label)


def iso_us(when: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds when there are any (recovery targets need them)."""
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if when.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def pg_time(when: dt.datetime) -> str:
    """A time as pgBackRest's --target and PostgreSQL's recovery_target_time both read it."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def parse_time(text: str, option: str) -> dt.datetime:
    """ISO 8601 (``2025-11-07T10:42:00Z``, an offset, or none = UTC) or ``YYYY-mm-dd HH:MM:SS[.ffffff]``."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}={text!r} is not a date and time: use e.g. 2025-11-07T10:42:00Z.") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------
# physical backups (pgbackrest_backup kind: physical_full | differential | incremental)


def metrics_label(stanza: str, kind: str | None = None) -> str:
    """The metrics' ``database`` label of a stanza: ``pgbackrest/<stanza>[/<kind>]``."""
    return f"pgbackrest/{stanza}" + (f"/{kind}" if kind else "")


@dataclasses.dataclass(frozen=True)
class PhysicalBackupJob:
    kind: str
    stanza: str = "main"
    config: str = DEFAULT_CONFIG
    user: str = DEFAULT_USER
    backup_dir: str = "/var/backups/postgresql"
    log_dir: str | None = None
    notifier: Notifier = Notifier()
    timeout: float = 24 * 3600

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PhysicalBackupJob":
        kind = params.get("kind") or "incremental"
        if kind not in KINDS:
            raise ConfigError(f"kind {kind!r} is not a physical backup kind ({', '.join(KINDS)}).")
        return cls(kind=kind, stanza=params.get("stanza") or "main",
                   config=params.get("pgbackrest_config") or DEFAULT_CONFIG,
                   user=params.get("pgbackrest_user") or DEFAULT_USER,
                   backup_dir=params.get("backup_dir") or "/var/backups/postgresql", log_dir=params.get("log_dir"),
                   notifier=Notifier.from_params(params))

    def engine(self) -> PgBackRest:
        return PgBackRest(self.config, self.stanza, self.user)


def repo_location(config: str, stanza: str) -> str | None:
    """``s3://bucket/path`` of the stanza's repository, from the configuration (None when unreadable)."""
    try:
        conf = read_conf(config)
    except ConfigError:
        return None

    def get(key: str) -> str | None:
        for section in (stanza, "global"):
            if conf.has_option(section, key):
                return conf.get(section, key)
        return None
    if get("repo1-type") != "s3" or not get("repo1-s3-bucket"):
        return get("repo1-path")
    return f"s3://{get('repo1-s3-bucket')}/{(get('repo1-path') or '').strip('/')}"


def _ensure_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}.") from None


def run_physical_backup(job: PhysicalBackupJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """One pgBackRest backup in the run frame of the logical backups: log, lock, webhook and metrics."""
    pgtype = KINDS[job.kind]
    if check_mode:
        return _plan_physical(job, job.engine(), echo)
    started = utcnow()
    log_dir = job.log_dir or job.backup_dir
    facts: dict[str, Any] = {}

    def prepare() -> None:
        _ensure_dir(job.backup_dir)
        _ensure_dir(log_dir)

    frame = Frame(title=f"Backup of stanza {job.stanza} - kind: {job.kind} (pgBackRest {pgtype})", notifier=job.notifier,
                  echo=echo, log_path=os.path.join(log_dir, f"backup_pgbackrest-{job.stanza}_{started.strftime(STAMP)}.log"),
                  lock_path=lock_path(job.backup_dir, f"pgbackrest-{job.stanza}"),
                  lock_what=f"the physical backup of stanza {job.stanza!r}", prepare=prepare, result={"changed": False})

    def work(log: RunLog) -> None:
        pgbr = job.engine()
        before = pgbr.info()
        prior = before.usable()[-1].label if before.usable() else None
        log(f"Repository {repo_location(job.config, job.stanza) or job.config}: {len(before.usable())} backup(s)"
            + (f", newest {prior}" if prior else ""))
        if pgtype != "full" and not any(b.type == "full" for b in before.usable()):
            log(f"No full backup yet: pgBackRest makes this {job.kind} backup a full one")
        log(f"Starting {job.kind.upper()} backup (pgbackrest backup --type={pgtype})...")
        proc = pgbr.run("backup", f"--type={pgtype}", timeout=job.timeout)
        for line in pgbr.progress(proc):
            log(f"pgbackrest: {line}")
        after = pgbr.info()
        known = {b.label for b in before.backups}
        new = [b for b in after.backups if b.label not in known]
        if not new:
            raise PgBackRestError(f"pgbackrest backup of stanza {job.stanza!r} reported success but info lists no new "
                                  "backup: check pgBackRest's log.")
        made = new[-1]
        expired = sorted(known - {b.label for b in after.backups})
        for label in expired:
            log(f"Expired by retention: {label}")
        repo = repo_location(job.config, job.stanza) or ""
        facts.update({**made.summary(), "id": made.label, "stanza": job.stanza, "size": made.repo_delta,
                      "s3_uri": f"{repo}/backup/{job.stanza}/{made.label}" if repo.startswith("s3://") else None,
                      "path": None, "sha256": None, "md5": None, "table_count": None, "weekly": False,
                      "requested_kind": job.kind})
        if made.kind != job.kind:
            log(f"WARNING: asked for {job.kind}, pgBackRest made a {made.kind} backup (no usable prior full backup)")
        log(f"{made.kind.upper()} backup {made.label} finished: {human(made.repo_delta)} stored in the repository "
            f"({human(made.delta)} of {human(made.database_size)} changed), WAL {made.wal_start}..{made.wal_stop}")
        frame.result.update(changed=True, backup=facts,
                            deleted=[{"id": label, "kind": "physical", "location": "s3"} for label in expired])
        log("Backup completed successfully")

    def conclude(status: str, error: str | None) -> Conclusion:
        host, duration = socket.gethostname(), frame.duration
        summary = (f"Backup of stanza {job.stanza} ({job.kind}) on {host} succeeded: {human(facts.get('size', 0))} in "
                   f"{duration:.1f}s" if status == "success" else f"Backup of stanza {job.stanza} ({job.kind}) on {host} FAILED: {error}")
        return Conclusion(
            event={"event": "backup", "status": status, "database": metrics_label(job.stanza), "kind": job.kind,
                   "host": host, "summary": summary, "duration_s": duration, "backup": facts or None, "error": error},
            metrics=samples(status, duration, last_size_bytes=facts.get("size", 0)), metrics_job="backup",
            metrics_label=metrics_label(job.stanza, job.kind))

    return frame.run(work, conclude)


def _plan_physical(job: PhysicalBackupJob, pgbr: PgBackRest, echo: IO[str] | None) -> dict[str, Any]:
    """Check mode: the repository answers, the stanza exists; say what would run. Writes nothing."""
    log = RunLog(echo=echo)
    log.banner(f"Backup of stanza {job.stanza} - kind: {job.kind} - check mode, nothing is written")
    info = pgbr.info()
    if not info.ok:
        raise PgBackRestError(f"stanza {job.stanza!r} is not healthy: {info.status} (code {info.status_code}). "
                              "Run pgbackrest check, or stanza-create if it is new.")
    pgtype = KINDS[job.kind]
    has_full = any(b.type == "full" for b in info.usable())
    effective = pgtype if pgtype == "full" or has_full else "full"
    log(f"Would run pgbackrest backup --type={effective} for stanza {job.stanza}"
        + ("" if effective == pgtype else f" (asked {pgtype}: no full backup yet)"))
    plan = {"stanza": job.stanza, "kind": job.kind, "type": effective,
            "prior": info.usable()[-1].label if info.usable() else None,
            "repository": repo_location(job.config, job.stanza), "backups": len(info.usable())}
    return {"changed": True, "plan": plan, "log": log.lines, "warnings": []}


# --------------------------------------------------------------------------
# listing (pg_backup_info)


def physical_listing(pgbr: PgBackRest, *, bin_dir: str | None = None) -> dict[str, Any]:
    """Physical backups (newest first) and the recoverable window, read-only."""
    info = pgbr.info()
    end = last_archived_commit(pgbr, info, bin_dir=bin_dir)
    line = lineage(pgbr, info)
    window = window_of(info, end, line=line)
    backups = [{**b.summary(), "timeline": b.timeline, "on_latest_timeline": line.on_it(b)} for b in reversed(info.backups)]
    return {"physical_backups": backups, "recoverable_window": window.summary(),
            "stanza_status": {"code": info.status_code, "message": info.status, "pg_version": info.pg_version,
                              "archive_min": info.archive_min, "archive_max": info.archive_max, "cipher": info.cipher}}
