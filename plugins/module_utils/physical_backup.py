# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The physical backup job (``pgbackrest_backup``, ``doctorq-pgbackrest backup``).

One ``pgbackrest backup`` in the run frame of the logical backups: the same
run log, lock, webhook and metrics; what pgBackRest made and expired is read
back from its catalog.

Its words (docs/DESIGN.md, "Words"): the backup set's ``id`` (pgBackRest's
label), its ``level`` (full, diff, incr: pgBackRest's types), whose backup
it is (``name``, the stanza; ``source_type`` ``stanza``). Results and
webhook events carry the keys of before beside them until 1.0.0 (``label``,
``kind``/``requested_kind`` in the old words, ``type``, ``stanza``,
``database``); the metrics keep their label ``pgbackrest/<stanza>/<kind>``
(the level in the old words), and so their file names.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import STAMP, utcnow
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, PgBackRestError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import (
    DEFAULT_CONFIG, DEFAULT_LOG_DIR, DEFAULT_USER, PgBackRest, metrics_label, repo_location,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import LEVELS, old_level_word
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import Conclusion, Frame, lock_path, samples
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog
from ansible_collections.doctorq.backup.plugins.module_utils.units import human


@dataclasses.dataclass(frozen=True)
class PhysicalBackupJob:
    level: str = "incr"
    stanza: str = "main"
    config: str = DEFAULT_CONFIG
    user: str = DEFAULT_USER
    log_dir: str = DEFAULT_LOG_DIR  # run logs and the lock
    notifier: Notifier = Notifier()
    timeout: float = 24 * 3600

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PhysicalBackupJob":
        level = params.get("level") or "incr"
        if level not in LEVELS:
            raise ConfigError(f"level {level!r} is not a physical backup level ({', '.join(LEVELS)}).")
        return cls(level=level, stanza=params.get("stanza") or "main",
                   config=params.get("pgbackrest_config") or DEFAULT_CONFIG,
                   user=params.get("pgbackrest_user") or DEFAULT_USER,
                   # backup_dir: the deprecated name of log_dir (read until 1.0.0; pg_backup's physical kinds too)
                   log_dir=params.get("log_dir") or params.get("backup_dir") or DEFAULT_LOG_DIR,
                   notifier=Notifier.from_params(params))

    def engine(self) -> PgBackRest:
        return PgBackRest(self.config, self.stanza, self.user)

    @property
    def source(self) -> dict[str, str]:
        """Whose backup it is, in results and events; ``stanza`` is its key of before (until 1.0.0)."""
        return {"name": self.stanza, "source_type": "stanza", "stanza": self.stanza}


def _ensure_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}.") from None


def run_physical_backup(job: PhysicalBackupJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """One pgBackRest backup in the run frame of the logical backups: log, lock, webhook and metrics."""
    if check_mode:
        return _plan_physical(job, job.engine(), echo)
    started = utcnow()
    facts: dict[str, Any] = {}

    def prepare() -> None:
        _ensure_dir(job.log_dir)

    frame = Frame(title=f"Backup of stanza {job.stanza} - level: {job.level}", notifier=job.notifier,
                  echo=echo, log_path=os.path.join(job.log_dir, f"backup_pgbackrest-{job.stanza}_{started.strftime(STAMP)}.log"),
                  lock_path=lock_path(job.log_dir, f"pgbackrest-{job.stanza}"),
                  lock_what=f"the physical backup of stanza {job.stanza!r}", prepare=prepare, result={"changed": False})

    def work(log: RunLog) -> None:
        pgbr = job.engine()
        before = pgbr.info()
        prior = before.usable()[-1].id if before.usable() else None
        log(f"Repository {repo_location(job.config, job.stanza) or job.config}: {len(before.usable())} backup(s)"
            + (f", newest {prior}" if prior else ""))
        if job.level != "full" and not any(b.level == "full" for b in before.usable()):
            log(f"No full backup yet: pgBackRest makes this {job.level} backup a full one")
        log(f"Starting {job.level.upper()} backup (pgbackrest backup --type={job.level})...")
        proc = pgbr.run("backup", f"--type={job.level}", timeout=job.timeout)
        for line in pgbr.progress(proc):
            log(f"pgbackrest: {line}")
        after = pgbr.info()
        known = {b.id: b for b in before.backups}
        new = [b for b in after.backups if b.id not in known]
        if not new:
            raise PgBackRestError(f"pgbackrest backup of stanza {job.stanza!r} reported success but info lists no new "
                                  "backup: check pgBackRest's log.")
        made = new[-1]
        expired = [known[backup_id] for backup_id in sorted(set(known) - {b.id for b in after.backups})]
        for gone in expired:
            log(f"Expired by retention: {gone.id}")
        repo = repo_location(job.config, job.stanza) or ""
        facts.update({**made.summary(), **job.source, "size": made.repo_delta,
                      "s3_uri": f"{repo}/backup/{job.stanza}/{made.id}" if repo.startswith("s3://") else None,
                      "path": None, "sha256": None, "md5": None, "table_count": None, "weekly": False,
                      "requested_level": job.level, "requested_kind": old_level_word(job.level)})
        if made.level != job.level:
            log(f"WARNING: asked for {job.level}, pgBackRest made a {made.level} backup (no usable prior full backup)")
        log(f"{made.level.upper()} backup {made.id} finished: {human(made.repo_delta)} stored in the repository "
            f"({human(made.delta)} of {human(made.database_size)} changed), WAL {made.wal_start}..{made.wal_stop}")
        # kind: physical, the key of before (until 1.0.0)
        frame.result.update(changed=True, backup=facts, deleted=[
            {"id": gone.id, "level": gone.level, "location": "s3", "kind": "physical"} for gone in expired])
        log("Backup completed successfully")

    def conclude(status: str, error: str | None) -> Conclusion:
        host, duration = socket.gethostname(), frame.duration
        what = f"Backup of stanza {job.stanza} ({facts.get('level', job.level)})"
        summary = (f"{what} on {host} succeeded: {human(facts.get('size', 0))} in {duration:.1f}s"
                   if status == "success" else f"{what} on {host} FAILED: {error}")
        return Conclusion(
            event={"event": "backup", "status": status, **job.source, "id": facts.get("id"),
                   "level": facts.get("level", job.level), "requested_level": job.level, "host": host,
                   "summary": summary, "duration_s": duration, "backup": facts or None, "error": error,
                   # the keys of before, until 1.0.0
                   "database": metrics_label(job.stanza), "kind": old_level_word(job.level)},
            metrics=samples(status, duration, last_size_bytes=facts.get("size", 0)), metrics_job="backup",
            # the label and file name of before: pgbackrest/<stanza>/<level in the old words>
            metrics_label=metrics_label(job.stanza, old_level_word(job.level)))

    return frame.run(work, conclude)


def _plan_physical(job: PhysicalBackupJob, pgbr: PgBackRest, echo: IO[str] | None) -> dict[str, Any]:
    """Check mode: the repository answers, the stanza exists; say what would run. Writes nothing."""
    log = RunLog(echo=echo)
    log.banner(f"Backup of stanza {job.stanza} - level: {job.level} - check mode, nothing is written")
    info = pgbr.info()
    if not info.ok:
        raise PgBackRestError(f"stanza {job.stanza!r} is not healthy: {info.status} (code {info.status_code}). "
                              "Run pgbackrest check, or stanza-create if it is new.")
    has_full = any(b.level == "full" for b in info.usable())
    effective = job.level if job.level == "full" or has_full else "full"
    log(f"Would run pgbackrest backup --type={effective} for stanza {job.stanza}"
        + ("" if effective == job.level else f" (asked {job.level}: no full backup yet)"))
    plan = {**job.source, "level": effective, "requested_level": job.level,
            "prior": info.usable()[-1].id if info.usable() else None,
            "repository": repo_location(job.config, job.stanza), "backups": len(info.usable()),
            "kind": old_level_word(job.level), "type": effective}  # the keys of before, until 1.0.0
    return {"changed": True, "plan": plan, "log": log.lines, "warnings": []}
