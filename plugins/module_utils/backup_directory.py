# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory backup's own steps (``pg_backup`` with ``jobs``), on top of ``backup_steps.Stores``.

The set is ``<id>.dir/`` (pg_dump -Fd -j N, see docs/DESIGN.md "Backup
naming"): ``dirdump`` writes it and stores each file as pg_dump closes it,
on disk and, one object per file, in S3. What differs from a one-file set is
here: the dump with S3 failures tolerated (the jobs' rule: the local copy is
kept, the run fails at its end), the manifest's checksums (those of the
``.sha256``/``.md5`` files, which hold one line per file), the sidecars'
bytes for S3, and the catch-up upload of every file. Commit, weekly copies,
leftovers and retention are the common steps, which know directories
through the manifest (``Manifest.files``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils import dirdump, pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest
from ansible_collections.doctorq.backup.plugins.module_utils.errors import IntegrityError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.storage import object_tags
from ansible_collections.doctorq.backup.plugins.module_utils.units import human

MAX_WORKERS = 8  # files read and uploaded at once: 1 MiB each, their S3 parts within dirdump.UPLOAD_BUDGET together


def dump(stores: Any, base_argv: Sequence[str], env: dict[str, str], name: str, backup_id: str, started: Any, *,
         jobs: int, compress: str, log: RunLog) -> tuple[dirdump.DirDump, dict[str, Any] | None, str | None]:
    """``pg_dump -Fd -j jobs`` into ``<backup_dir>/<name>``, each file to S3 too; the dump, S3 facts, S3 error.

    ``stores``: the job's ``backup_steps.Stores`` (its S3 part, and what the
    run wrote until the commit). An S3 failure stops the uploads, not the
    dump: the objects already uploaded are removed (or left to the next run's
    leftovers), and the local directory completes.
    """
    path = stores.new_path(name)
    upload = None
    if stores.s3:
        upload = dirdump.S3Upload(stores.s3.client, stores.s3.cfg, stores.s3_key(started, name),
                                  tags=object_tags("daily", data=True), metadata={"backup-id": backup_id},
                                  tolerate_failure=True)
    for ref in (path, f"{path}.sha256", f"{path}.md5"):
        stores.written("local", ref)
    result = dirdump.run(dirdump.dump_argv(base_argv, path, jobs, compress), env, path, upload,
                         workers=max(2, min(jobs, MAX_WORKERS)))
    log(f"Directory dump finished: {len(result.files)} files, {human(result.size)} with {jobs} job(s); "
        "MD5 and SHA-256 checksum files written")
    if upload is None:
        return result, None, stores.s3_problem
    if upload.error is not None:
        left = upload.discard()
        error = f"{upload.error}" + (f" {left}" if left else "")
        stores.s3_failed(error, log)
        return result, None, error
    for key in upload.keys:
        stores.written("s3", key)
    facts = {**stores.s3.location_facts(stores.s3_key(started, name)),
             "objects": {f.name: {"checksum": f.s3["checksum"], "sha256_metadata": f.s3["sha256_metadata"]}
                         for f in sorted(result.files, key=lambda f: f.name)}}
    return result, facts, None


def checksums(result: dirdump.DirDump) -> tuple[str, str]:
    """The manifest's ``sha256`` and ``md5`` of a directory backup: those of its ``.sha256`` and ``.md5`` files."""
    dirname = os.path.basename(result.path.rstrip("/"))
    return (hashlib.sha256(dirdump.sidecar_text(dirname, result.files, "sha256")).hexdigest(),
            hashlib.md5(dirdump.sidecar_text(dirname, result.files, "md5")).hexdigest())  # nosec: a checksum, as md5sum


def sidecar(local_dir: str, manifest: Manifest, suffix: str) -> bytes:
    """The ``.sha256``/``.md5`` file of a directory backup as written on disk, checked against the manifest."""
    path = os.path.join(local_dir, manifest.file + suffix)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise IntegrityError(f"cannot read {path} ({exc.strerror}), a checksum file of the directory backup "
                             f"{manifest.id}: it was not uploaded; run `sha256sum -c` on the backup and do not count "
                             "on it until it passes.") from None
    algorithm = suffix.lstrip(".")
    if hashlib.new(algorithm, data).hexdigest() != getattr(manifest, algorithm):
        raise IntegrityError(f"{path} no longer matches the manifest of {manifest.id}: it was not uploaded. Check the "
                             "disk, and do not count on this backup.")
    return data


def upload(stores: Any, manifest: Manifest, local_dir: str) -> dict[str, Any]:
    """Catch-up: every file of a complete local directory backup to S3, re-hashed on the way; its S3 facts.

    A file that no longer matches the manifest stops the upload (the objects
    uploaded so far are removed again) with an ``IntegrityError``.
    """
    prefix = stores.s3_key(manifest.started, manifest.file)
    for suffix in (".sha256", ".md5"):
        sidecar(local_dir, manifest, suffix)  # before any upload: a damaged checksum file is a damaged backup
    objects: dict[str, Any] = {}
    keys: list[str] = []
    try:
        for entry in manifest.dir_files or []:
            key = f"{prefix}/{entry['name']}"
            keys.append(key)
            result = pipeline.upload_file(os.path.join(local_dir, manifest.file, entry["name"]),
                                          stores.data_sink(key, manifest.id), entry["size"], entry["sha256"])
            objects[entry["name"]] = {"checksum": result["checksum"], "sha256_metadata": result["sha256_metadata"]}
    except IntegrityError:
        try:
            stores.s3.remove(keys)
        except StorageError:
            pass  # no manifest lists them: the next run's leftovers remove them
        raise
    return {**stores.s3.location_facts(prefix), "objects": objects}
