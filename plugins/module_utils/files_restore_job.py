# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file-set restore job (``files_restore``).

The backup found, brought back from an archive tier and its checksums
verified first, by the same engine as database restores (restore_source.py);
every member of the archive checked before anything is extracted
(tarstream.py: no absolute names, no ``..``, no hard link out of the
archive, nothing under a symlink of the archive, no device); confirmation
needed to replace a non-empty directory; a safety backup of it
(files_backup_job.py); extraction into a staging directory beside the target,
checked against the archive, then swapped into place (the old directory kept
as ``<target>.pre_restore_<ts>``). A failure before the swap leaves the
target as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import errno
import json
import os
import shutil
import socket
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier, notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, encode_name
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError, IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.files_backup_job import FilesJob, run_files_backup
from ansible_collections.doctorq.backup.plugins.module_utils.fileset import TYPE, check_set_name, norm, under
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import lock_path
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.restore_run import RestoreRun
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import (
    FILES, ArchiveOptions, Source, archive_argument_spec, check_source, parse_when, safety_argument_spec,
)
from ansible_collections.doctorq.backup.plugins.module_utils.tarstream import (
    Member, check_sample, find_tar, inspect_archive, tar_features, tool_env, tree_counts,
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
        **safety_argument_spec(),
        previous=dict(type="dict", options=dict(drop=dict(type="bool", default=False))),
        work_dir=dict(type="path"),
        **archive_argument_spec(),
        **notify_argument_spec(),
    )


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
        safety = params.get("safety") or {}
        return cls(name=params.get("name"), source=source, before=parse_when(params.get("before")),
                   backup_dir=params.get("backup_dir") or "/var/backups/files",
                   s3=s3util.S3Config.from_params(params.get("s3")), target=target,
                   confirm=params.get("confirm") or "", safety_backup=safety.get("backup") is not False,
                   safety_dir=safety.get("dir"), drop_previous=bool((params.get("previous") or {}).get("drop")),
                   work_dir=params.get("work_dir"), archive=ArchiveOptions.from_params(params),
                   notifier=Notifier.from_params(params))


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
            root = (manifest.contents or {}).get("root") or "/"
            if root == "/":
                raise ConfigError(f"{manifest.id} was taken relative to / ({', '.join((manifest.contents or {}).get('sources', []))}): "
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
        expected = m.contents or {}
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
        sample = (m.contents or {}).get("sample") or []
        problems = check_sample(staging, sample)
        if problems:
            raise IntegrityError(f"{len(problems)} of the {len(sample)} files whose content the backup recorded differ "
                                 f"after extraction: {'; '.join(problems[:5])}. The target was not touched.")
        self.result["sample_verified"] = len(sample)
        log(f"Extracted tree matches the archive (files, symlinks, bytes) and {len(sample)} recorded content hash(es)")

    def take_safety_backup(self, m: Manifest, target: str, log: RunLog) -> dict[str, Any]:
        def backup(safety_dir: str) -> dict[str, Any]:
            return run_files_backup(FilesJob(name=m.name, paths=(target,), root=target, backup_dir=safety_dir,
                                             policy=JobPolicy(weekly="never", prune=False)), echo=None)
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
        return {"source_type": TYPE, "name": self.label, "type": "files", "target": self.result.get("target"),
                "previous": self.result.get("previous")}

    def event(self, status: str, error: str | None) -> dict[str, Any]:
        summary = (f"Restore of file set {self.label} into {self.result.get('target')} on {socket.gethostname()}: "
                   f"{status}" + (f" ({error})" if error else ""))
        return {"event": "files_restore", "status": status, "source_type": TYPE, "name": self.label,
                "file_set": self.label, "target": self.result.get("target"),
                "host": socket.gethostname(), "summary": summary, "error": error, "source": self.result.get("source"),
                "duration_s": self.result["duration_s"]}

    def work(self, log: RunLog, check_mode: bool) -> None:
        source = self.find_source(log)
        m = source.manifest
        self.result["source"] = {"id": m.id, "name": m.name, "source_type": m.source_type, "kind": m.kind,
                                 "location": m.location, "ref": source.ref, "started_at": m.started_at, "size": m.size,
                                 "contents": m.contents, "fileset": m.contents}
        self.result["checksums"] = {"sha256": m.sha256, "md5": m.md5, "verified": False}
        target = self.target(m)
        self.result["target"] = target
        with contextlib.ExitStack() as stack:
            if check_mode:
                replaces = os.path.isdir(target) and not os.path.islink(target) and bool(os.listdir(target))
            else:
                stack.enter_context(Lock(lock_path(self.job.backup_dir, m.name, "files"),
                                         f"a backup or restore of file set {m.name!r}"))
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
                if path and source.store.remote:  # a download of the backup, not the backup itself
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
            log(f"Dropped the previous tree {previous} (previous.drop)")
        log.banner("RESTORE COMPLETED SUCCESSFULLY")


def run_files_restore(job: FilesRestoreJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """Restore one file-set backup. Returns the result; ``failed``/``msg`` on failure."""
    return _FilesRestore(job, echo).run(check_mode)
