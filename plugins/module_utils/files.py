# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""File sets: application directories and the server's configuration, backed up and restored.

Backup (``files_backup``): GNU tar writes the set (owners as numbers, modes,
symlinks, hard links, xattrs, ACLs, sparse files) straight into the
compressor; the same pipeline as a database dump hashes it once and writes it
to disk and S3, with the same checksum files, manifest (``type: files``),
weekly copies, retention, lock, log, webhook and metrics. A file that changed
while tar read it (tar's exit status 1) is reported by name in the result,
the manifest, the log and the webhook; by default that is a warning (the
archive is complete, only that file may be inconsistent), ``on_change: fail``
makes it a failure.

Restore (``files_restore``): the backup found, brought back from an archive
tier and its checksums verified first, by the same engine as database
restores (restore_source.py); every member of the archive checked before anything
is extracted (no absolute names, no ``..``, no hard link out of the archive,
nothing under a symlink of the archive, no device); confirmation needed to
replace a non-empty directory; a safety backup of it; extraction into a
staging directory beside the target, checked against the archive, then
swapped into place (the old directory kept as ``<target>.pre_restore_<ts>``).
A failure before the swap leaves the target as it was.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import dataclasses
import datetime as dt
import errno
import functools
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import tarfile
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier, notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy, policy_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.units import human
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    STAMP, Manifest, backup_id, encode_name, iso, utcnow,
)
from ansible_collections.doctorq.backup.plugins.module_utils.errors import (
    ConfigError, DoctorqError, IntegrityError, StorageError,
)
from ansible_collections.doctorq.backup.plugins.module_utils.backup_steps import Stores
from ansible_collections.doctorq.backup.plugins.module_utils.retention import DEFAULT_MIN_COUNT
from ansible_collections.doctorq.backup.plugins.module_utils.runfiles import private_dir
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.restore_run import RestoreRun
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import (
    FILES, ArchiveOptions, Source, archive_argument_spec, check_source, parse_when,
)
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store

TYPE = "files"
PRESETS = ("postgresql_config",)
# A set's name, encoded (catalog.encode_name), starts every file name of its backups: room for the rest of them.
MAX_SET_NAME = 189
# tar's messages (LC_ALL=C) for a file that was not read as one consistent state.
CHANGE_RE = re.compile(r"^(?:\S*/)?tar: (?P<path>.+): (?P<what>file changed as we read it|File removed before we read it|"
                       r"File shrank by \d+ bytes; padding with zeros)$")
# Settings of postgresql.conf that name files the server needs to start as it did.
PG_FILE_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir", "hba_file",
                    "ident_file")


def files_backup_argument_spec() -> dict[str, Any]:
    """Options of the file-set backup (doc: plugins/modules/files_backup.py)."""
    return dict(
        name=dict(type="str"),
        paths=dict(type="list", elements="path", default=[]),
        preset=dict(type="str", choices=list(PRESETS)),
        pg_config_dir=dict(type="path", default="/etc/postgresql"),
        pg_version=dict(type="str"),
        pg_cluster=dict(type="str", default="main"),
        root=dict(type="path"),
        exclude=dict(type="list", elements="str", default=[]),
        one_file_system=dict(type="bool", default=False),
        on_change=dict(type="str", default="warn", choices=["warn", "fail"]),
        backup_dir=dict(type="path", default="/var/backups/files"),
        **policy_argument_spec(),
    )


def files_restore_argument_spec() -> dict[str, Any]:
    """Options of the file-set restore (doc: plugins/modules/files_restore.py)."""
    return dict(
        name=dict(type="str"),
        source=dict(type="str", default="latest"),
        before=dict(type="str"),
        backup_dir=dict(type="path", default="/var/backups/files"),
        target=dict(type="path"),
        confirm=dict(type="str", default=""),
        safety_backup=dict(type="bool", default=True),
        safety_dir=dict(type="path"),
        drop_previous=dict(type="bool", default=False),
        work_dir=dict(type="path"),
        **archive_argument_spec(),
        **notify_argument_spec(),
    )


def check_set_name(name: str | None) -> str:
    """Any name but ``weekly`` (the S3 folder of weekly copies); in file names and keys it is encoded (encode_name)."""
    if not name or name == "weekly":
        raise ConfigError(f"name {name!r} is not a usable file-set name: give the set a name ('weekly' is reserved "
                          "for the weekly copies' S3 folder).")
    if len(encode_name(name)) > MAX_SET_NAME:
        raise ConfigError(f"name {name!r} is too long for a file-set name: it starts the name of every backup file, "
                          f"and a file name has at most 255 bytes; use at most {MAX_SET_NAME} letters, digits, '.', "
                          "'_' and '-' (other characters count three each, more outside ASCII).")
    return name


def norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


# --------------------------------------------------------------------------
# the PostgreSQL configuration preset


def _pg_value(raw: str) -> str:
    """A postgresql.conf value: a quoted string ('' and \\' escapes) or a bare word, comments removed."""
    raw = raw.strip()
    if raw.startswith("'"):
        out, i = [], 1
        while i < len(raw):
            char = raw[i]
            if char == "\\" and i + 1 < len(raw):
                out.append(raw[i + 1])
                i += 2
                continue
            if char == "'":
                if raw[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(char)
            i += 1
        return "".join(out)
    return raw.split("#", 1)[0].strip()


def pg_conf_settings(path: str, _depth: int = 0) -> tuple[dict[str, str], list[str]]:
    """Settings of a postgresql.conf (the last one wins) and every file it includes, in the server's order."""
    settings: dict[str, str] = {}
    files = [path]
    if _depth > 10:
        raise ConfigError(f"{path}: include nesting deeper than 10.")
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    base = os.path.dirname(path)
    for line in lines:
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=\s*|\s+)(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        key, value = match.group(1).lower(), _pg_value(match.group(2))
        if key in ("include", "include_if_exists", "include_dir"):
            target = value if os.path.isabs(value) else os.path.join(base, value)
            if key == "include_dir":
                included = sorted(os.path.join(target, n) for n in os.listdir(target)
                                  if n.endswith(".conf") and not n.startswith(".")) if os.path.isdir(target) else []
            elif os.path.isfile(target):
                included = [target]
            elif key == "include":
                raise ConfigError(f"{path} includes {target}, which does not exist: the server would not start either.")
            else:
                included = []
            for child in included:
                sub, subfiles = pg_conf_settings(child, _depth + 1)
                settings.update(sub)
                files += subfiles
            continue
        settings[key] = value
    return settings, files


def postgresql_config_paths(config_dir: str, version: str | None, cluster: str) -> tuple[list[str], list[str]]:
    """``/etc/postgresql/<version>/<cluster>/`` (conf.d, pg_hba.conf, ...) and the files postgresql.conf names.

    Paths named by the configuration are relative to the data directory, as
    the server reads them; those outside the cluster's directory (certificates
    and keys in /etc/ssl, an hba_file elsewhere) are added, those missing are
    reported as warnings.
    """
    if version:
        versions = [version]
    else:
        try:
            versions = sorted((v for v in os.listdir(config_dir) if os.path.isdir(os.path.join(config_dir, v, cluster))),
                              key=lambda v: (len(v), v))
        except OSError:
            versions = []
    clusters = [os.path.join(config_dir, v, cluster) for v in versions]
    if not clusters or not all(os.path.isdir(c) for c in clusters):
        raise ConfigError(f"no PostgreSQL configuration for cluster {cluster!r} under {config_dir} "
                          f"({'version ' + version if version else 'any version'}): set pg_version/pg_cluster/"
                          "pg_config_dir (pg_lsclusters lists the clusters).")
    paths: list[str] = []
    warnings: list[str] = []
    for version_, cdir in zip(versions, clusters):
        paths.append(cdir)
        conf = os.path.join(cdir, "postgresql.conf")
        if not os.path.isfile(conf):
            warnings.append(f"{conf} does not exist; only the directory is backed up.")
            continue
        settings, conf_files = pg_conf_settings(conf)
        data_dir = settings.get("data_directory") or f"/var/lib/postgresql/{version_}/{cluster}"
        named = [settings[k] for k in PG_FILE_SETTINGS if settings.get(k)]
        if settings.get("ssl", "off").lower() in ("on", "true", "yes", "1"):
            named += [d for k, d in (("ssl_cert_file", "server.crt"), ("ssl_key_file", "server.key")) if not settings.get(k)]
        for value in named:
            path = norm(value if os.path.isabs(value) else os.path.join(data_dir, value))
            if under(path, cdir) or path in paths:
                continue
            if os.path.exists(path):
                paths.append(path)
            else:
                warnings.append(f"{path} (named in {conf}) does not exist; it is not in the backup.")
        paths += [norm(f) for f in conf_files if not under(norm(f), cdir) and norm(f) not in paths]
    return paths, warnings


# --------------------------------------------------------------------------
# the backup job


@functools.lru_cache(maxsize=None)
def tar_features(tar: str) -> frozenset[str]:
    """Which optional GNU tar options this tar has (``--acls`` needs a tar built with libacl)."""
    try:
        out = procs.run([tar, "--help"], env=tool_env(), check=False).stdout
        version = procs.run([tar, "--version"], env=tool_env(), check=False).stdout
    except procs.ProcessFailed:
        return frozenset()
    if "GNU" not in version:
        return frozenset()
    return frozenset(opt for opt in ("--acls", "--xattrs", "--sparse", "--index-file") if opt in out) | {"gnu"}


def find_tar() -> str:
    tar = shutil.which("tar")
    if not tar or "gnu" not in tar_features(tar):
        raise DoctorqError("GNU tar not found on PATH: install the tar package (Debian's tar is GNU tar).")
    return tar


def tool_env() -> dict[str, str]:
    """C locale (tar's messages are parsed) and no TAR_OPTIONS that could change what is archived."""
    env = {k: v for k, v in os.environ.items() if k not in ("TAR_OPTIONS", "TAPE", "TAR_SUBCOMMAND")}
    env.update(LC_ALL="C", LANG="C")
    return env


@dataclasses.dataclass(frozen=True)
class FilesJob(JobPolicy):
    name: str
    paths: tuple[str, ...]
    root: str
    backup_dir: str
    s3: s3util.S3Config | None = None
    exclude: tuple[str, ...] = ()
    one_file_system: bool = False
    on_change: str = "warn"
    compression: str = "zstd"
    compression_level: int | None = None
    compression_threads: int = 0
    weekly: str = "auto"
    weekly_day: str = "sunday"
    retention_daily_days: int = 30
    retention_weekly_days: int = 365
    retention_min_count: int = DEFAULT_MIN_COUNT
    prune: bool = True
    notifier: Notifier = Notifier()
    log_dir: str | None = None
    preset: str | None = None
    notes: tuple[str, ...] = ()  # what resolving the preset found worth a warning

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "FilesJob":
        policy = cls.policy_from_params(params)
        paths = [norm(p) for p in params.get("paths") or []]
        notes: list[str] = []
        preset = params.get("preset")
        if preset == "postgresql_config":
            found, notes = postgresql_config_paths(params.get("pg_config_dir") or "/etc/postgresql",
                                                   params.get("pg_version"), params.get("pg_cluster") or "main")
            paths += [p for p in found if p not in paths]
        if not paths:
            raise ConfigError("nothing to back up: give paths (directories or files) or a preset.")
        name = check_set_name(params.get("name") or (preset if preset else None))
        for path in paths:
            if not os.path.lexists(path):
                raise ConfigError(f"{path} does not exist: fix the paths option (nothing was written).")
        # a path inside another one would be archived twice
        paths = [p for p in dict.fromkeys(paths) if not any(o != p and under(p, o) for o in paths)]
        # one directory (a symlink to one too: tar enters it) is archived relative to itself
        root = norm(params["root"]) if params.get("root") else (
            paths[0] if len(paths) == 1 and os.path.isdir(paths[0]) else "/")
        outside = [p for p in paths if not under(p, root)]
        if outside:
            raise ConfigError(f"{', '.join(outside)} not under root {root}: every path must be inside root.")
        return cls(
            name=name, paths=tuple(dict.fromkeys(paths)), root=root, backup_dir=params.get("backup_dir") or "/var/backups/files",
            s3=s3util.S3Config.from_params(params.get("s3")), exclude=tuple(params.get("exclude") or ()),
            one_file_system=bool(params.get("one_file_system")), on_change=params.get("on_change") or "warn",
            preset=preset, notes=tuple(notes), **policy,
        )

    @property
    def members(self) -> list[str]:
        """The paths as tar names them, relative to root (``.`` for root itself)."""
        return ["." if p == self.root else os.path.relpath(p, self.root) for p in self.paths]

    @property
    def extension(self) -> str:
        return ".tar" + super().extension

    def self_excludes(self) -> list[str]:
        """Member names of our own output (backup and log directories) when they lie inside the set."""
        names = []
        for directory in dict.fromkeys(norm(d) for d in (self.backup_dir, self.log_dir) if d):
            for path, member in zip(self.paths, self.members):
                if under(directory, path) and directory != path:
                    rel = os.path.relpath(directory, path)
                    names.append(rel if member == "." else f"{member}/{rel}")
                    if member == ".":
                        names.append(f"./{rel}")
        return names

    def tar_argv(self, tar: str, index_file: str) -> list[str]:
        features = tar_features(tar)
        argv = [tar, "--create", "--file=-", "--format=posix", "--numeric-owner", f"--directory={self.root}",
                "--sparse", "--xattrs", "--warning=file-changed", "--warning=file-removed", "--warning=file-shrank",
                "--verbose", "--verbose", f"--index-file={index_file}", "--full-time", "--quoting-style=escape"]
        if "--acls" in features:
            argv.append("--acls")
        if self.one_file_system:
            argv.append("--one-file-system")
        own = self.self_excludes()
        if own:
            argv += ["--anchored"] + [f"--exclude={n}" for n in own] + ["--no-anchored"]
        argv += [f"--exclude={pattern}" for pattern in self.exclude]
        return argv + ["--"] + self.members


def parse_index(path: str) -> dict[str, int]:
    """Counts from tar's ``-vv`` listing: members, regular files (hard links too), dirs, symlinks, file bytes."""
    counts = {"count": 0, "files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            kind = parts[0][0]
            counts["count"] += 1
            if kind in "-h":
                counts["files"] += 1
                if kind == "-" and parts[2].isdigit():
                    counts["bytes"] += int(parts[2])
            elif kind == "d":
                counts["dirs"] += 1
            elif kind == "l":
                counts["symlinks"] += 1
    return counts


SAMPLE_FILES = 32
SAMPLE_MAX_BYTES = 64 * 1024 * 1024  # per file, and 4 times that in all: a sample, not a second backup


def unescape_member(name: str) -> str:
    """A member name as tar's ``--quoting-style=escape`` printed it (C locale: octal for non-ASCII bytes)."""
    if "\\" not in name:
        return name
    raw, _len = codecs.escape_decode(name.encode("latin-1", "backslashreplace"))
    return os.fsdecode(raw)


def regular_members(path: str) -> list[tuple[str, int]]:
    """(member name, size) of the regular files in tar's ``-vv`` listing, in archive order."""
    found = []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) == 6 and parts[0].startswith("-") and parts[2].isdigit():
                found.append((unescape_member(parts[5]), int(parts[2])))
    return found


def content_sample(job_root: str, index: str, not_after_ns: int) -> list[dict[str, Any]]:
    """SHA-256 of up to SAMPLE_FILES regular files spread over the archive, read again from disk.

    Only files whose inode did not change since before tar started (ctime
    before the run, the same after hashing) are taken, so the bytes hashed are
    the bytes tar archived; a restore (or a drill) compares them with what it
    extracted.
    """
    candidates = [(n, size) for n, size in regular_members(index) if size <= SAMPLE_MAX_BYTES]
    step = max(1, len(candidates) // SAMPLE_FILES)
    sample: list[dict[str, Any]] = []
    budget = 4 * SAMPLE_MAX_BYTES
    for name, size in candidates[::step]:
        if size > budget:
            continue
        path = os.path.join(job_root, name)
        try:
            before = os.lstat(path)
            if not stat.S_ISREG(before.st_mode) or before.st_ctime_ns >= not_after_ns or before.st_size != size:
                continue
            with open(path, "rb") as handle:
                digest = pipeline.copy_hashed(handle)
            after = os.lstat(path)
        except OSError:
            continue
        budget -= digest.size
        if after.st_ctime_ns == before.st_ctime_ns and after.st_size == before.st_size == digest.size:
            sample.append({"path": posixpath.normpath(name), "size": digest.size, "sha256": digest.sha256})
        if len(sample) >= SAMPLE_FILES:
            break
    return sample


def check_sample(top: str, sample: list[dict[str, Any]]) -> list[str]:
    """Files of the manifest's sample that are missing or differ below ``top``."""
    problems = []
    for item in sample:
        path = os.path.join(top, item["path"])
        try:
            with open(path, "rb") as handle:
                digest = pipeline.copy_hashed(handle)
        except OSError as exc:
            problems.append(f"{item['path']}: {exc.strerror}")
            continue
        if (digest.size, digest.sha256) != (item["size"], item["sha256"]):
            problems.append(f"{item['path']}: {digest.size} bytes, sha256 {digest.sha256}; the backup recorded "
                            f"{item['size']} bytes, sha256 {item['sha256']}")
    return problems


def changed_files(stderr: str) -> list[dict[str, str]]:
    found = []
    for line in stderr.splitlines():
        match = CHANGE_RE.match(line.strip())
        if match:
            found.append({"path": match.group("path"), "reason": match.group("what")})
    return found


class _FilesRun:
    """One run of a file-set backup."""

    def __init__(self, job: FilesJob, now: dt.datetime | None, echo: IO[str] | None) -> None:
        self.job = job
        self.started = now or utcnow()
        self.id = backup_id(job.name, self.started, "files")
        local = LocalStore(job.backup_dir)
        self.warnings: list[str] = list(job.notes)
        self.stores = Stores(local, S3Store(job.s3) if job.s3 else None, job.name, TYPE,
                             min_count=job.retention_min_count, warnings=self.warnings)
        self.echo = echo

    @property
    def file_name(self) -> str:
        return f"{self.id}{self.job.extension}"

    def plan(self) -> dict[str, Any]:
        log = RunLog(echo=self.echo)
        job = self.job
        log.banner(f"Backup of file set {job.name} - check mode, nothing is written")
        find_tar()
        job.compressor()
        unreadable = [p for p in job.paths if not os.access(p, os.R_OK)]
        if unreadable:
            raise DoctorqError(f"cannot read {', '.join(unreadable)} as uid {os.geteuid()}: run the backup as a user "
                               "who can (root for the server configuration).")
        self.stores.check_access(log)
        path = self.stores.local.path("daily", self.file_name)
        s3_uri = job.s3.uri(self.stores.s3_key(self.started, self.file_name)) if self.stores.s3 else None
        log(f"Would archive {', '.join(job.paths)} (root {job.root}) into {path}" + (f" and upload {s3_uri}" if s3_uri else ""))
        weekly = job.weekly_due(self.started)
        would_upload, would_delete = self.stores.plan(self.started, job.keep_days, self.id, self.file_name,
                                                      weekly=weekly, prune=job.prune, log=log)
        return {"changed": True, "plan": {"name": job.name, "paths": list(job.paths), "root": job.root, "path": path,
                                          "s3_uri": s3_uri, "weekly": weekly, "would_upload": would_upload,
                                          "would_delete": would_delete,
                                          "leftovers": self.stores.local.leftovers(job.name, TYPE)},
                "log": log.lines, "warnings": self.warnings}

    def run(self) -> dict[str, Any]:
        job = self.job
        frame = Frame(title=f"Backup of file set {job.name}", notifier=job.notifier, echo=self.echo,
                      log_path=os.path.join(job.log_dir or job.backup_dir,
                                            f"backup_{encode_name(job.name)}_files_{self.started.strftime(STAMP)}.log"),
                      lock_path=lock_path(job.backup_dir, job.name, "files"),
                      lock_what=f"the backup of file set {job.name!r}", prepare=self.stores.local.ensure_writable,
                      result={"changed": False}, warnings=self.warnings)

        def work(log: RunLog) -> None:
            for note in job.notes:
                log(f"WARNING: {note}")
            self._locked(log, frame.started_at, frame.result)

        def conclude(status: str, error: str | None) -> Conclusion:
            result, duration, host = frame.result, frame.duration, socket.gethostname()
            backup = result.get("backup") or {}
            changed = (backup.get("fileset") or {}).get("changed_during_backup") or result.get("changed_during_backup") or []
            if status == "success":
                summary = (f"Backup of file set {job.name} on {host} succeeded: {backup['fileset']['count']} entries, "
                           f"{human(backup.get('size', 0))} in {duration:.1f}s"
                           + (f"; {len(changed)} file(s) changed while read" if changed else ""))
            else:
                summary = f"Backup of file set {job.name} on {host} FAILED: {error}"
            metrics = samples(status, duration, last_size_bytes=backup.get("size", 0))
            metrics["last_changed_files"] = float(len(changed))
            if status == "success":
                metrics["last_file_count"] = float(backup["fileset"]["count"])
            return Conclusion(
                event={"event": "files_backup", "status": status, "database": job.name, "file_set": job.name,
                       "host": host, "summary": summary, "duration_s": duration, "backup": backup or None,
                       "changed_during_backup": changed, "error": error, "s3_error": self.stores.s3_problem},
                metrics=metrics, metrics_job="files_backup", metrics_label=job.name)

        return frame.run(work, conclude)

    def _locked(self, log: RunLog, t0: float, out: dict[str, Any]) -> None:
        job, stores = self.job, self.stores
        tar = find_tar()
        compressor = job.compressor()
        stores.open_s3(log)  # S3 refusing goes on local-only: the backup is still made
        out["leftovers_removed"] = stores.clean_leftovers(log)
        name = self.file_name
        path = stores.new_path(name)
        log(f"Archiving {', '.join(job.paths)} (root {job.root})" + (f", excluding {', '.join(job.exclude)}" if job.exclude else ""))
        log(f"File: {path}")
        changed: list[dict[str, str]] = []
        stderr_seen: list[str] = []

        def accept(index: int, status: int, stderr: str) -> bool:
            stderr_seen.append(stderr)
            if index != 0 or status != 1:
                return False  # tar's 2 is fatal; the compressor never fails harmlessly
            changed.extend(changed_files(stderr))
            return job.on_change == "warn"

        tar_started_ns = time.time_ns()
        with stores.until_committed(log):  # a step failing before the commit point leaves nothing of the set
            with private_dir("index", base=job.backup_dir) as tmp:  # a kill -9 leaves it to the next run to reap
                index = os.path.join(tmp, "index")
                try:
                    digest, s3_facts, s3_error = stores.stream(
                        [job.tar_argv(tar, index), compressor], tool_env(), name, self.started, self.id,
                        ["tar"] + ([os.path.basename(compressor[0])] if compressor else []), accept=accept, log=log)
                except pipeline.StageFailed:
                    if changed and job.on_change == "fail":
                        out["changed_during_backup"] = changed
                        raise DoctorqError(f"{len(changed)} file(s) changed while they were read "
                                           f"({', '.join(c['path'] for c in changed[:10])}) and on_change is fail: nothing "
                                           "was kept. Stop what writes them, or set on_change: warn.") from None
                    raise
                counts = parse_index(index)
                sample = content_sample(job.root, index, tar_started_ns)
            if changed:
                warning = (f"{len(changed)} file(s) changed while they were read; the backup is kept, but these may be "
                           f"inconsistent in it: {', '.join(c['path'] + ' (' + c['reason'] + ')' for c in changed[:20])}"
                           + (" ..." if len(changed) > 20 else ""))
                self.warnings.append(warning)
                log(f"WARNING: {warning}")
            log(f"Archive finished: {counts['count']} entries, {counts['files']} files, {human(counts['bytes'])} of file "
                f"data; {human(digest.size)} ({job.compression})")
            fileset = {"root": job.root, "paths": job.members, "sources": list(job.paths), "exclude": list(job.exclude),
                       "preset": job.preset, **counts, "changed_during_backup": changed,
                       "tar_version": _tar_version(tar), "sample": sample}
            manifest = Manifest(
                id=self.id, database=job.name, kind="daily", started_at=iso(self.started), finished_at=iso(utcnow()),
                duration_s=round(time.monotonic() - t0, 3), file=name, size=digest.size, sha256=digest.sha256,
                md5=digest.md5, compression=job.compression, compression_level=job.level, format="tar",
                host=socket.gethostname(), s3=s3_facts, type=TYPE, fileset=fileset)
            local_manifest, s3_manifest, s3_error = stores.commit(manifest, log, s3_error)
        out.update(changed=True, changed_during_backup=changed,
                   backup={**local_manifest.summary(), "path": path, "weekly": False})
        if job.weekly_due(self.started):
            out["backup"].update(stores.weekly(local_manifest, s3_manifest, log))
        stores.finish(self.started, self.id, path, out, log, keep_days=job.keep_days, prune=job.prune)
        log("Backup completed successfully" + (" (with files changed while read)" if changed else ""))


@functools.lru_cache(maxsize=None)
def _tar_version(tar: str) -> str:
    try:
        return procs.run([tar, "--version"], env=tool_env(), check=False).stdout.splitlines()[0]
    except (procs.ProcessFailed, IndexError):
        return ""


def run_files_backup(job: FilesJob, *, check_mode: bool = False, now: dt.datetime | None = None,
                     echo: IO[str] | None = None) -> dict[str, Any]:
    """Back up one file set. Returns the result; ``failed``/``msg`` are set on failure."""
    run = _FilesRun(job, now, echo)
    return run.plan() if check_mode else run.run()


# --------------------------------------------------------------------------
# the restore


@dataclasses.dataclass(frozen=True)
class FilesRestoreJob:
    name: str | None = None
    source: str = "latest"
    before: dt.datetime | None = None
    backup_dir: str = "/var/backups/files"
    s3: s3util.S3Config | None = None
    target: str | None = None
    confirm: str = ""
    safety_backup: bool = True
    safety_dir: str | None = None
    drop_previous: bool = False
    work_dir: str | None = None
    archive: ArchiveOptions = ArchiveOptions()
    notifier: Notifier = Notifier()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "FilesRestoreJob":
        source = check_source(params.get("source") or "latest")
        if source == "latest":
            if not params.get("name"):
                raise ConfigError("name is required with source=latest: name the file set to restore "
                                  "(pg_backup_info with type: files lists them), or give a backup file as source.")
            check_set_name(params.get("name"))
        target = norm(params["target"]) if params.get("target") else None
        if target == "/":
            raise ConfigError("target / cannot be swapped: restore into a directory (a new one to copy from, or the "
                              "directory that was backed up).")
        return cls(name=params.get("name"), source=source, before=parse_when(params.get("before")),
                   backup_dir=params.get("backup_dir") or "/var/backups/files",
                   s3=s3util.S3Config.from_params(params.get("s3")), target=target,
                   confirm=params.get("confirm") or "", safety_backup=params.get("safety_backup", True),
                   safety_dir=params.get("safety_dir"), drop_previous=bool(params.get("drop_previous")),
                   work_dir=params.get("work_dir"), archive=ArchiveOptions.from_params(params),
                   notifier=Notifier.from_params(params))


@dataclasses.dataclass
class Member:
    """What the archive holds, from its headers, counted the way the extracted tree is counted."""

    count: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0


def member_problem(member: tarfile.TarInfo, symlinks: set[str]) -> str | None:
    """Why extracting ``member`` could write outside the target, or None."""
    name = member.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "'..' in the path"
    clean = posixpath.normpath(name)
    if member.islnk():
        if member.linkname.startswith("/") or ".." in member.linkname.split("/"):
            return f"hard link to {member.linkname!r} outside the archive"
    if member.ischr() or member.isblk():
        return "device file"
    parent = clean
    while "/" in parent:
        parent = parent.rsplit("/", 1)[0]
        if parent in symlinks:
            return f"path through the archive's symlink {parent!r}"
    return None


def inspect_archive(path: str, compression: str) -> Member:
    """Read every header of a (verified) archive; refuse it whole if any member could escape the target."""
    decompress = pipeline.decompressor_argv(compression)
    with open(path, "rb") as raw, (procs.Pipe([decompress], stdin=raw) if decompress else contextlib.nullcontext()) as pipe:
        stream = pipe.stdout if pipe else raw
        counts, symlinks, bad, unreadable = Member(), set(), [], None
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    problem = member_problem(member, symlinks)
                    if problem:
                        bad.append(f"{member.name!r} ({problem})")
                        continue
                    counts.count += 1
                    if member.isreg() or member.islnk():
                        counts.files += 1
                        counts.bytes += member.size if member.isreg() else 0
                    elif member.isdir():
                        counts.dirs += 1
                    elif member.issym():
                        counts.symlinks += 1
                        symlinks.add(posixpath.normpath(member.name))
        except tarfile.TarError as exc:
            unreadable = exc
        if pipe:  # the decompressor's status says more than tar's "unexpected end of data"
            while stream.read(1 << 20):  # what follows the end-of-archive blocks
                pass
            try:
                pipe.wait()
            except procs.ProcessFailed as exc:
                raise IntegrityError(f"decompressing {path} failed ({exc}); nothing was extracted.") from None
    if unreadable:
        raise IntegrityError(f"{path} is not a readable tar archive ({unreadable}); nothing was extracted.")
    if bad:
        raise IntegrityError(f"{path} holds {len(bad)} member(s) that would be written outside the target: "
                             f"{', '.join(bad[:10])}. Refusing to restore it; nothing was extracted.")
    return counts


def tree_counts(top: str) -> Member:
    """Counts of an extracted tree, as inspect_archive counts an archive (hard-linked bytes once)."""
    counts, inodes = Member(), set()
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISLNK(st.st_mode):
                counts.symlinks += 1
                if name in dirs:
                    dirs.remove(name)
            elif stat.S_ISDIR(st.st_mode):
                counts.dirs += 1
            elif stat.S_ISREG(st.st_mode):
                counts.files += 1
                if (st.st_dev, st.st_ino) not in inodes:
                    inodes.add((st.st_dev, st.st_ino))
                    counts.bytes += st.st_size
    return counts


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two directories atomically (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _rename(src: str, dst: str) -> None:
    os.rename(src, dst)


def swap_into_place(staging: str, target: str, previous: str) -> None:
    """``target`` becomes ``staging``'s tree; the old one moves to ``previous``. All or nothing."""
    if _exchange(staging, target):
        try:
            _rename(staging, previous)  # ``staging`` holds the old tree now
        except OSError:
            _exchange(staging, target)
            raise
        return
    _rename(target, previous)
    try:
        _rename(staging, target)
    except OSError:
        _rename(previous, target)
        raise


class _FilesRestore(RestoreRun):
    job: FilesRestoreJob

    def __init__(self, job: FilesRestoreJob, echo: IO[str] | None) -> None:
        super().__init__(job, echo, FILES, {"changed": False})

    # -- source ------------------------------------------------------------------
    def find_source(self, log: RunLog) -> Source:
        return self.sources.find(self.job.source, self.job.name, self.job.before, log)

    # -- target and confirmation ----------------------------------------------------
    def target(self, manifest: Manifest) -> str:
        if self.job.target:
            target = self.job.target
        else:
            root = (manifest.fileset or {}).get("root") or "/"
            if root == "/":
                raise ConfigError(f"{manifest.id} was taken relative to / ({', '.join((manifest.fileset or {}).get('sources', []))}): "
                                  "set target to a directory to restore into (its tree appears under it).")
            target = root
        backup_dir = norm(self.job.backup_dir)
        if under(backup_dir, target):
            raise ConfigError(f"target {target} contains the backup directory {backup_dir}: restoring there would move "
                              "the backups away. Choose another target.")
        return target

    def check_confirmation(self, target: str) -> bool:
        """True when the target holds something the restore replaces (then confirm must name it)."""
        if not os.path.lexists(target):
            return False
        if os.path.islink(target) or not os.path.isdir(target):
            raise ConfigError(f"target {target} exists and is not a directory: choose a directory.")
        if not os.listdir(target):
            return False
        if not self.confirmed(target):
            said = f"confirm={self.job.confirm!r} does not match" if self.job.confirm else "no confirmation was given"
            raise ConfigError(f"restoring into {target} replaces a non-empty directory and {said}: set confirm={target} "
                              "(the target directory's path) to go ahead. Nothing was touched.")
        return True

    def confirmed(self, target: str) -> bool:
        return bool(self.job.confirm) and norm(self.job.confirm) == target

    # -- fetch (archive tiers, checksums): self.sources (restore_source.py) -------------------
    def inspect(self, path: str, m: Manifest, log: RunLog) -> Member:
        started = time.monotonic()
        counts = inspect_archive(path, m.compression)
        self.timed("inspect", started)
        expected = m.fileset or {}
        if (counts.count, counts.bytes) != (expected.get("count"), expected.get("bytes")):
            self.warnings.append(f"the archive holds {counts.count} entries / {counts.bytes} bytes, its manifest says "
                                 f"{expected.get('count')} / {expected.get('bytes')}")
        log(f"Archive checked: {counts.count} entries, none outside the target")
        return counts

    # -- extract and swap -----------------------------------------------------------------
    def extract(self, path: str, m: Manifest, staging: str, log: RunLog) -> None:
        started = time.monotonic()
        tar = find_tar()
        root = os.geteuid() == 0
        argv = [tar, "--extract", "--file=-", f"--directory={staging}", "--numeric-owner", "--preserve-permissions",
                "--xattrs", f"--xattrs-include={'*' if root else 'user.*'}", "--delay-directory-restore",
                "--same-owner" if root else "--no-same-owner"]
        if "--acls" in tar_features(tar):
            argv.append("--acls")
        decompress = pipeline.decompressor_argv(m.compression)
        try:
            with open(path, "rb") as raw, open(os.devnull, "wb") as out, \
                    procs.Pipe([decompress, argv], stdin=raw, stdout=out, env=tool_env()) as pipe:
                pipe.wait()
        except procs.ProcessFailed as exc:
            what = "tar" if exc.name == "tar" else "decompression"
            raise DoctorqError(f"{what} failed while extracting {m.file}: {exc}") from None
        self.timed("extract", started)
        log(f"Extracted into {staging} in {time.monotonic() - started:.1f}s")

    def check_tree(self, staging: str, counts: Member, m: Manifest, log: RunLog) -> None:
        """The extracted tree against the archive (counts, bytes) and the backup's sample of content hashes."""
        got = tree_counts(staging)
        if (got.files, got.symlinks, got.bytes) != (counts.files, counts.symlinks, counts.bytes):
            raise IntegrityError(f"the extracted tree has {got.files} files, {got.symlinks} symlinks, {got.bytes} "
                                 f"bytes; the archive holds {counts.files}, {counts.symlinks}, {counts.bytes}. "
                                 "The target was not touched.")
        sample = (m.fileset or {}).get("sample") or []
        problems = check_sample(staging, sample)
        if problems:
            raise IntegrityError(f"{len(problems)} of the {len(sample)} files whose content the backup recorded differ "
                                 f"after extraction: {'; '.join(problems[:5])}. The target was not touched.")
        self.result["sample_verified"] = len(sample)
        log(f"Extracted tree matches the archive (files, symlinks, bytes) and {len(sample)} recorded content hash(es)")

    def take_safety_backup(self, m: Manifest, target: str, log: RunLog) -> dict[str, Any]:
        def backup(safety_dir: str) -> dict[str, Any]:
            return run_files_backup(FilesJob(name=m.database, paths=(target,), root=target, backup_dir=safety_dir,
                                             weekly="never", prune=False), echo=None)
        outcome = self.safety_backup(target, backup, log)
        self.warnings += outcome.get("warnings") or []
        return outcome["backup"]

    # -- the run (RestoreRun.run) --------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.job.name or os.path.basename(self.job.source)

    def log_name(self) -> str:
        return f"restore_{encode_name(self.label)}_files_{self.stamp}.log"

    def title(self) -> str:
        return f"Restore of file set {self.label}"

    def audit_record(self) -> dict[str, Any]:
        return {"type": TYPE, "target": self.result.get("target"), "previous": self.result.get("previous")}

    def event(self, status: str, error: str | None) -> dict[str, Any]:
        summary = (f"Restore of file set {self.label} into {self.result.get('target')} on {socket.gethostname()}: "
                   f"{status}" + (f" ({error})" if error else ""))
        return {"event": "files_restore", "status": status, "file_set": self.label, "target": self.result.get("target"),
                "host": socket.gethostname(), "summary": summary, "error": error, "source": self.result.get("source"),
                "duration_s": self.result["duration_s"]}

    def work(self, log: RunLog, check_mode: bool) -> None:
        source = self.find_source(log)
        m = source.manifest
        self.result["source"] = {"id": m.id, "name": m.database, "kind": m.kind, "location": m.location,
                                 "ref": source.ref, "started_at": m.started_at, "size": m.size, "fileset": m.fileset}
        self.result["checksums"] = {"sha256": m.sha256, "md5": m.md5, "verified": False}
        target = self.target(m)
        self.result["target"] = target
        with contextlib.ExitStack() as stack:
            if check_mode:
                replaces = os.path.isdir(target) and not os.path.islink(target) and bool(os.listdir(target))
            else:
                stack.enter_context(Lock(lock_path(self.job.backup_dir, m.database, "files"),
                                         f"a backup or restore of file set {m.database!r}"))
                replaces = self.check_confirmation(target)
            # an archived object: check mode only looks; a run requests it and waits, or returns pending
            state = (self.sources.archive_state(source, [m.file], request=False) if check_mode
                     else self.sources.wait_for_archive(source, [m.file], log))
            if state == "pending" and not check_mode:
                return
            path = self.sources.fetch_verified(source, m.file, log, keep=True) if state == "available" else None
            try:
                counts = None
                if path:
                    self.result["checksums"]["verified"] = True
                    counts = self.inspect(path, m, log)
                    self.result["contents"] = dataclasses.asdict(counts)
                previous = f"{target}.pre_restore_{self.stamp}"
                if check_mode:
                    self.result.update(changed=True, plan={
                        "target": target, "target_exists": os.path.lexists(target), "replaces": replaces,
                        "confirmation_ok": not replaces or self.confirmed(target),
                        "safety_backup": bool(replaces and self.job.safety_backup),
                        "previous": previous if replaces else None, "archive_state": state})
                    log(f"Plan: {json.dumps(self.result['plan'], sort_keys=True)}")
                    return
                self._restore(path, m, counts, target, replaces, previous, log)
            finally:
                if path and isinstance(source.store, S3Store):
                    pipeline.remove_quietly(path)

    def _restore(self, path: str, m: Manifest, counts: Member, target: str, replaces: bool, previous: str,
                 log: RunLog) -> None:
        if replaces:
            log(f"Confirmation received for {target}")
            if self.job.safety_backup:
                self.result["safety_backup"] = self.take_safety_backup(m, target, log)["path"]
        parent = os.path.dirname(target)
        staging = os.path.join(parent, f".{os.path.basename(target)}.restoring_{self.stamp}")
        if os.path.lexists(staging) or os.path.lexists(previous):
            raise StorageError(f"{staging} or {previous} exists already (two restores in the same second?): "
                               "run again in a moment.")
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            os.mkdir(staging, 0o700)  # beside the target: same file system, so the swap is a rename
        except OSError as exc:
            raise StorageError(f"cannot create the staging directory {staging}: {exc.strerror}; the target was not "
                               "touched.") from None
        try:
            self.extract(path, m, staging, log)
            self.check_tree(staging, counts, m, log)
            started = time.monotonic()
            if replaces:
                swap_into_place(staging, target, previous)
                self.result["previous"] = previous
                log(f"Swapped: {target} is the restored tree; the previous one is kept as {previous}")
            else:
                if os.path.isdir(target) and not os.path.islink(target):
                    os.rmdir(target)  # empty: nothing to keep
                _rename(staging, target)
                log(f"Restored into {target}")
            self.timed("swap", started)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            log(f"Removed the staging directory {staging}; {target} is as it was")
            if isinstance(exc, OSError):
                raise StorageError(f"restoring into {target} failed ({exc}); {target} is as it was.") from None
            raise
        self.result["changed"] = True
        if replaces and self.job.drop_previous:
            shutil.rmtree(previous)
            self.result["previous_dropped"] = True
            log(f"Dropped the previous tree {previous} (drop_previous)")
        log.banner("RESTORE COMPLETED SUCCESSFULLY")


def run_files_restore(job: FilesRestoreJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """Restore one file-set backup. Returns the result; ``failed``/``msg`` on failure."""
    return _FilesRestore(job, echo).run(check_mode)
