# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The safe restore (``pg_restore_safe``): verify first, safety copy first, swap last.

Order of a run, and why:
1. find the backup through its manifest (no manifest, no restore);
2. check the confirmation before any slow work, so a typo costs nothing;
3. bring an archived S3 object back (or say when to come back);
4. read every byte once and compare it with the manifest: a damaged backup
   never reaches the database;
5. take a safety backup of the current target through the backup engine;
6. ``swap``: restore into a new database, verify it, then rename the target
   away and the new one into place in one transaction, so the target is
   either the old database or the verified new one, never half of each.
   ``replace``: the seed's drop-and-restore, with the safety backup restored
   automatically if anything fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import socket
import subprocess
import time
from typing import IO, Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.backup import (
    BackupJob, Notifier, human, notify_argument_spec, run_backup,
)
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import (
    MANIFEST_SUFFIX, STAMP, Manifest, iso, utcnow,
)
from ansible_collections.doctorq.backup.plugins.module_utils.errors import (
    ConfigError, DoctorqError, IntegrityError, PgError, StorageError,
)
from ansible_collections.doctorq.backup.plugins.module_utils.info import list_backups
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, quote_ident
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import Lock, RunLog, append_audit
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore, S3Store

MAX_IDENT = 63
TIERS = ("Expedited", "Standard", "Bulk")


def restore_argument_spec() -> dict[str, Any]:
    """Options of the restore besides the connection ones (doc: plugins/modules/pg_restore_safe.py)."""
    return dict(
        source=dict(type="str", default="latest"),
        source_db=dict(type="str"),
        before=dict(type="str"),
        backup_dir=dict(type="path", default="/var/backups/postgresql"),
        confirm=dict(type="str", default=""),
        mode=dict(type="str", default="swap", choices=["swap", "replace"]),
        jobs=dict(type="int", default=1),
        safety_backup=dict(type="bool", default=True),
        safety_dir=dict(type="path"),
        drop_previous=dict(type="bool", default=False),
        previous_retention_days=dict(type="int", default=0),
        restore_globals=dict(type="bool", default=False),
        no_owner=dict(type="bool", default=False),
        no_privileges=dict(type="bool", default=False),
        row_tolerance=dict(type="float", default=0.1),
        archive_tier=dict(type="str", default="Standard", choices=list(TIERS)),
        archive_days=dict(type="int", default=1),
        wait_timeout=dict(type="int", default=0),
        poll_interval=dict(type="int", default=30),
        work_dir=dict(type="path"),
        **notify_argument_spec(),
    )


@dataclasses.dataclass(frozen=True)
class RestoreJob:
    conn: PgConn
    db: str
    source: str = "latest"
    source_db: str | None = None
    before: dt.datetime | None = None
    backup_dir: str = "/var/backups/postgresql"
    s3: s3util.S3Config | None = None
    confirm: str = ""
    mode: str = "swap"
    jobs: int = 1
    safety_backup: bool = True
    safety_dir: str | None = None
    drop_previous: bool = False
    previous_retention_days: int = 0
    restore_globals: bool = False
    no_owner: bool = False
    no_privileges: bool = False
    row_tolerance: float = 0.1
    archive_tier: str = "Standard"
    archive_days: int = 1
    wait_timeout: int = 0
    poll_interval: int = 30
    work_dir: str | None = None
    notifier: Notifier = Notifier()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "RestoreJob":
        if not params.get("db"):
            raise ConfigError("db is required: name the database to restore into.")
        if params.get("mode") == "replace" and params.get("safety_backup") is False:
            raise ConfigError("mode=replace drops the target before restoring: it needs safety_backup=true.")
        for name in ("jobs", "previous_retention_days", "wait_timeout"):
            if (params.get(name) or 0) < 0:
                raise ConfigError(f"{name} must not be negative.")
        if (params.get("archive_days") or 1) < 1 or (params.get("poll_interval") or 30) < 1:
            raise ConfigError("archive_days and poll_interval must be at least 1.")
        return cls(
            # Server-level work (CREATE/RENAME/DROP DATABASE) runs from the maintenance database: the
            # target may not exist yet.
            conn=dataclasses.replace(PgConn.from_params(params), db=None), db=params["db"],
            source=params.get("source") or "latest",
            source_db=params.get("source_db"), before=parse_when(params.get("before")),
            backup_dir=params.get("backup_dir") or "/var/backups/postgresql",
            s3=s3util.S3Config.from_params(params.get("s3")), confirm=params.get("confirm") or "",
            mode=params.get("mode") or "swap", jobs=params.get("jobs") if params.get("jobs") is not None else 1,
            safety_backup=params.get("safety_backup", True), safety_dir=params.get("safety_dir"),
            drop_previous=bool(params.get("drop_previous")),
            previous_retention_days=params.get("previous_retention_days") or 0,
            restore_globals=bool(params.get("restore_globals")), no_owner=bool(params.get("no_owner")),
            no_privileges=bool(params.get("no_privileges")),
            row_tolerance=params.get("row_tolerance", 0.1) if params.get("row_tolerance") is not None else 0.1,
            archive_tier=params.get("archive_tier") or "Standard", archive_days=params.get("archive_days") or 1,
            wait_timeout=params.get("wait_timeout") or 0, poll_interval=params.get("poll_interval") or 30,
            work_dir=params.get("work_dir"), notifier=Notifier.from_params(params),
        )


def parse_when(text: str | None) -> dt.datetime | None:
    """``before``: ISO 8601 (``2025-11-07T02:00:00Z``, with an offset) or ``YYYY-mm-dd HH:MM:SS`` (UTC)."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"before={text!r} is not a date and time: use e.g. 2025-11-07T02:00:00Z.") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@dataclasses.dataclass
class Source:
    manifest: Manifest
    store: LocalStore | S3Store

    @property
    def ref(self) -> str:
        if isinstance(self.store, S3Store):
            return self.store.cfg.uri(self.store.data_key(self.manifest))
        return self.store.data_path(self.manifest)


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def conninfo_db(name: str) -> str:
    """A conninfo naming only the database: a name with ``=`` in it cannot become options."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Restore:
    def __init__(self, job: RestoreJob, echo: IO[str] | None) -> None:
        self.job = job
        self.echo = echo
        self.now = utcnow()
        self.stamp = self.now.strftime(STAMP)
        self.local = LocalStore(job.backup_dir)
        self.durations: dict[str, float] = {}
        self.warnings: list[str] = []
        self.result: dict[str, Any] = {"changed": False, "database": job.db, "mode": job.mode}

    # -- helpers -----------------------------------------------------------
    def timed(self, phase: str, started: float) -> None:
        self.durations[phase] = round(self.durations.get(phase, 0.0) + time.monotonic() - started, 3)

    def derived_name(self, kind: str) -> str:
        suffix = f"__{kind}_{self.stamp}"
        return self.job.db[:MAX_IDENT - len(suffix)] + suffix

    def s3_store(self, bucket: str | None = None) -> S3Store:
        cfg = self.job.s3 or s3util.S3Config(bucket=bucket or "")
        if bucket and bucket != cfg.bucket:
            cfg = dataclasses.replace(cfg, bucket=bucket)
        return S3Store(cfg)

    # -- 1. source -----------------------------------------------------------
    def find_source(self, log: RunLog) -> Source:
        src = self.job.source
        if src.startswith("s3://"):
            bucket, _slash, key = src[5:].partition("/")
            if not bucket or not key:
                raise ConfigError(f"source {src!r} is not an s3://bucket/key URI.")
            key = key[:-len(MANIFEST_SUFFIX)] if key.endswith(MANIFEST_SUFFIX) else key
            store = self.s3_store(bucket)
            with s3util.s3_errors("reading the manifest", store.cfg.uri(key + MANIFEST_SUFFIX)):
                try:
                    raw = store.client.get_object(Bucket=bucket, Key=key + MANIFEST_SUFFIX)["Body"].read()
                except Exception as exc:  # pylint: disable=broad-except
                    if s3util.error_code(exc) in ("NoSuchKey", "404"):
                        raise StorageError(f"{src} has no manifest ({key + MANIFEST_SUFFIX}): it is not a complete "
                                           "backup written by doctorq.backup; refusing to restore it. List complete "
                                           "backups with pg_backup_info.") from None
                    raise
            manifest = self._checked_manifest(raw, "s3", key + MANIFEST_SUFFIX, os.path.basename(key), src)
            return Source(manifest, store)
        if src != "latest":
            path = os.path.abspath(src[:-len(MANIFEST_SUFFIX)] if src.endswith(MANIFEST_SUFFIX) else src)
            try:
                with open(path + MANIFEST_SUFFIX, "rb") as handle:
                    raw = handle.read()
            except FileNotFoundError:
                raise StorageError(f"{path} has no manifest ({path + MANIFEST_SUFFIX}): it is not a complete backup "
                                   "written by doctorq.backup (an interrupted run leaves no manifest); refusing to "
                                   "restore it. List complete backups with pg_backup_info.") from None
            except OSError as exc:
                raise StorageError(f"cannot read {path + MANIFEST_SUFFIX}: {exc.strerror}.") from None
            manifest = self._checked_manifest(raw, "local", path + MANIFEST_SUFFIX, os.path.basename(path), src)
            return Source(manifest, self.local)
        db = self.job.source_db or self.job.db
        stores: list[LocalStore | S3Store] = [self.local] + ([self.s3_store()] if self.job.s3 else [])
        found = [m for m in list_backups(stores, db) if not self.job.before or m.started < self.job.before]
        if not found:
            where = " and ".join([self.job.backup_dir] + ([self.job.s3.where] if self.job.s3 else []))
            when = f" before {iso(self.job.before)}" if self.job.before else ""
            raise StorageError(f"no complete backup of database {db!r}{when} in {where}: check source_db/backup_dir/s3, "
                               "or list backups with pg_backup_info.")
        newest = found[0]
        # The same backup on disk and in S3: the local copy needs no download.
        same = [m for m in found if m.id == newest.id]
        chosen = next((m for m in same if m.location == "local"), same[0])
        log(f"Newest complete backup of {db!r}: {chosen.id} ({chosen.location}, {chosen.kind})")
        return Source(chosen, self.local if chosen.location == "local" else stores[-1])

    @staticmethod
    def _checked_manifest(raw: bytes, location: str, origin: str, name: str, src: str) -> Manifest:
        manifest = Manifest.from_json(raw, location=location, origin=origin)
        if manifest is None or manifest.file != name:
            raise StorageError(f"the manifest of {src} is not a doctorq.backup manifest for that file; refusing to restore it.")
        return manifest

    # -- 2. confirmation ---------------------------------------------------------
    def target_exists(self, pg: PgClient) -> bool:
        return pg.database_exists(self.job.db)

    def check_confirmation(self, exists: bool) -> None:
        if exists and self.job.confirm != self.job.db:
            said = f"confirm={self.job.confirm!r} does not match" if self.job.confirm else "no confirmation was given"
            raise ConfigError(f"restoring into {self.job.db!r} replaces an existing database and {said}: set "
                              f"confirm={self.job.db} (the target database's name) to go ahead. Nothing was touched.")

    # -- 3. archive tiers ------------------------------------------------------------
    def archive_state(self, source: Source, names: list[str], *, request: bool) -> str:
        """``available`` or ``pending``; issues the archive restore request for objects still in a cold tier."""
        if not isinstance(source.store, S3Store):
            return "available"
        store = source.store
        pending = []
        for name in names:
            key = store.sibling(source.manifest, name)
            with s3util.s3_errors("HEAD", store.cfg.uri(key)):
                head = store.client.head_object(Bucket=store.cfg.bucket, Key=key)
            storage_class = head.get("StorageClass", "STANDARD")
            if storage_class not in s3util.ARCHIVE_CLASSES:
                continue
            restore = head.get("Restore") or ""
            if 'ongoing-request="false"' in restore:
                continue
            self.result.setdefault("archive", {})[name] = {"storage_class": storage_class,
                                                           "restore": "in progress" if restore else "not requested"}
            if not restore and request:
                self._request_restore(store, key)
                self.result["archive"][name]["restore"] = "requested"
                self.result["changed"] = True
            pending.append(name)
        return "pending" if pending else "available"

    def _request_restore(self, store: S3Store, key: str) -> None:
        try:
            with s3util.s3_errors("archive restore request", store.cfg.uri(key)):
                store.client.restore_object(Bucket=store.cfg.bucket, Key=key, RestoreRequest={
                    "Days": self.job.archive_days, "GlacierJobParameters": {"Tier": self.job.archive_tier}})
        except StorageError as exc:
            if exc.code == "RestoreAlreadyInProgress":
                return
            if exc.code in ("MethodNotAllowed", "NotImplemented"):
                raise StorageError(f"{store.cfg.where} does not support restoring archived objects ({exc.code}): "
                                   "restore the object to a readable storage class with the store's own tools.") from None
            raise

    # -- 4. fetch and verify ---------------------------------------------------------
    def fetch_verified(self, source: Source, name: str, size: int, sha256: str, md5: str, log: RunLog,
                       *, keep: bool) -> str | None:
        """Read ``name`` once, hashing it; return a local path of verified bytes (None when not ``keep``)."""
        started = time.monotonic()
        partial = None
        if isinstance(source.store, LocalStore):
            path = source.store.sibling(source.manifest, name)
            try:
                with open(path, "rb") as handle:
                    digest = pipeline.copy_hashed(handle)
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc.strerror}.") from None
            self.timed("verify", started)
        else:
            path = os.path.join(self.work_dir(), name) if keep else None
            partial = path + ".partial" if path else None
            body = source.store.open(source.manifest, name)
            try:
                out = open(partial, "wb") if partial else None  # pylint: disable=consider-using-with
                try:
                    with s3util.s3_errors("download", source.store.cfg.uri(source.store.sibling(source.manifest, name))):
                        digest = pipeline.copy_hashed(body, out)
                finally:
                    if out:
                        out.close()
            except BaseException:
                if partial:
                    pipeline.remove_quietly(partial)
                raise
            finally:
                body.close()
            self.timed("download", started)
            log(f"Downloaded {name} ({human(digest.size)}) in {time.monotonic() - started:.1f}s")
        if (digest.size, digest.sha256, digest.md5) != (size, sha256, md5):
            if partial:
                pipeline.remove_quietly(partial)
            raise IntegrityError(
                f"checksum mismatch for {name}: read {digest.size} bytes with sha256 {digest.sha256} and md5 "
                f"{digest.md5}, the manifest says {size} bytes, sha256 {sha256}, md5 {md5}. The backup is damaged; "
                f"the target database was not touched. Restore another backup (pg_backup_info lists them).")
        if partial:
            os.rename(partial, path)
        log(f"Checksums verified (SHA-256 and MD5) for {name}")
        return path

    def work_dir(self) -> str:
        path = self.job.work_dir or os.path.join(self.job.backup_dir, ".restore-work")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    # -- 6. restore -----------------------------------------------------------------
    @staticmethod
    def db_settings(pg: PgClient, name: str) -> tuple | None:
        """Owner, encoding and locale of a database, to create its successor alike."""
        rows = pg.query("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
                        "FROM pg_database WHERE datname = %s", (name,), db="postgres")
        return rows[0] if rows else None

    @staticmethod
    def create_database(pg: PgClient, name: str, settings: tuple | None) -> None:
        options = "TEMPLATE template0"
        if settings:
            owner, encoding, collate, ctype = settings
            options += (f" OWNER {quote_ident(owner)} ENCODING {sql_literal(encoding)}"
                        f" LC_COLLATE {sql_literal(collate)} LC_CTYPE {sql_literal(ctype)}")
        pg.query(f"CREATE DATABASE {quote_ident(name)} {options}", db="postgres")

    def copy_grants(self, pg: PgClient, src: str, dst: str) -> None:
        """Database-level privileges of the database being replaced, onto its successor."""
        rows = pg.query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
            "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", (src,), db="postgres")
        for grantee, privilege in rows:
            who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
            pg.query(f"GRANT {privilege} ON DATABASE {quote_ident(dst)} TO {who}", db="postgres")
        settings = pg.query("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                            "WHERE d.datname = %s", (src,), db="postgres")[0][0]
        if settings:
            self.warnings.append(f"{src} has {settings} ALTER DATABASE ... SET setting(s); they were not carried "
                                 f"over: re-apply them to {dst} (see the previous database).")

    def pg_restore(self, pg: PgClient, local_path: str, compression: str, dbname: str, log: RunLog) -> None:
        started = time.monotonic()
        argv = [pg.tool("pg_restore"), "--exit-on-error", "--no-password", f"--dbname={conninfo_db(dbname)}"]
        if self.job.no_owner:
            argv.append("--no-owner")
        if self.job.no_privileges:
            argv.append("--no-privileges")
        jobs = self.job.jobs or os.cpu_count() or 1
        decompress = pipeline.decompressor_argv(compression)
        env = pg.env(dbname)
        if jobs > 1:
            # Parallel restore needs a seekable archive: decompress it once to the work dir.
            plain = local_path
            if decompress:
                plain = os.path.join(self.work_dir(), f".{os.path.basename(local_path)}.plain")
                with open(plain, "wb") as out, open(local_path, "rb") as inp:
                    proc = subprocess.run(decompress, stdin=inp, stdout=out, stderr=subprocess.PIPE, check=False)
                if proc.returncode:
                    pipeline.remove_quietly(plain)
                    raise PgError(f"decompressing {local_path} failed: {proc.stderr.decode(errors='replace')[-500:]}")
            try:
                proc = subprocess.run(argv + [f"--jobs={jobs}", plain], env=env, stdin=subprocess.DEVNULL,
                                      capture_output=True, check=False)
            finally:
                if plain != local_path:
                    pipeline.remove_quietly(plain)
            if proc.returncode:
                raise PgError(f"pg_restore into {dbname!r} failed: {pg.explain(proc.stderr.decode(errors='replace')[-1500:])}")
        else:
            with open(local_path, "rb") as inp:
                first = subprocess.Popen(decompress or ["cat"], stdin=inp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                second = subprocess.run(argv, stdin=first.stdout, env=env, capture_output=True, check=False)
                first.stdout.close()
                first.wait()
            if second.returncode or first.returncode:
                raise PgError(f"pg_restore into {dbname!r} failed: {pg.explain(second.stderr.decode(errors='replace')[-1500:])}")
        self.timed("restore", started)
        log(f"pg_restore into {dbname!r} finished in {time.monotonic() - started:.1f}s ({jobs} job(s))")

    def verify_restored(self, pg: PgClient, dbname: str, manifest: Manifest, log: RunLog) -> dict[str, Any]:
        """Every table of the manifest is there; exact row counts match; estimates within tolerance."""
        started = time.monotonic()
        facts = {f"{t['schema']}.{t['name']}": t for t in pg.table_facts(dbname)}
        expected = {f"{t['schema']}.{t['name']}": t for t in manifest.tables}
        missing = sorted(set(expected) - set(facts))
        mismatched = []
        big = [name for name, t in expected.items() if name in facts and t.get("rows") is None]
        if big:
            pg.query("ANALYZE " + ", ".join(quote_ident(n.split(".", 1)[0]) + "." + quote_ident(n.split(".", 1)[1])
                                            for n in big), db=dbname)
            estimates = {f"{s}.{n}": int(r) for s, n, r in pg.query(
                "SELECT n.nspname, c.relname, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')", db=dbname)}
        for name, want in sorted(expected.items()):
            got = facts.get(name)
            if got is None:
                continue
            if want.get("rows") is not None:
                rows = got["rows"] if got["rows"] is not None else pg.query(
                    f"SELECT count(*) FROM {quote_ident(want['schema'])}.{quote_ident(want['name'])}", db=dbname)[0][0]
                if rows != want["rows"]:
                    mismatched.append(f"{name}: {rows} rows, the backup had {want['rows']}")
            elif want.get("rows_estimate"):
                est = estimates.get(name, 0)
                if abs(est - want["rows_estimate"]) > max(1000, self.job.row_tolerance * want["rows_estimate"]):
                    mismatched.append(f"{name}: about {est} rows, the backup's estimate was {want['rows_estimate']}")
        report = {"expected": len(expected), "found": len(facts), "missing": missing, "mismatched": mismatched,
                  "exact": sum(1 for t in expected.values() if t.get("rows") is not None)}
        self.timed("verify_after", started)
        if missing or mismatched or len(facts) != len(expected):
            raise IntegrityError(f"the restored database {dbname!r} does not match the backup: "
                                 f"{len(facts)} tables for {len(expected)} expected; missing {missing[:10]}; "
                                 f"mismatched {mismatched[:10]}.")
        log(f"Tables found: {len(facts)}; every table of the backup is present, row counts match "
            f"({report['exact']} exact, {len(expected) - report['exact']} estimated)")
        return report

    # -- swap / replace -----------------------------------------------------------------
    def close_target(self, pg: PgClient, name: str, log: RunLog) -> int:
        """Block new connections to ``name`` and end the open ones; returns how many were ended."""
        pg.query(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS false", db="postgres")
        ended = 0
        for _attempt in range(50):
            rows = pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (name,), db="postgres")
            ended += len(rows)
            if not pg.query("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,), db="postgres"):
                break
            time.sleep(0.1)
        else:
            pg.query(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS true", db="postgres")
            raise PgError(f"sessions on {name!r} did not end within 5 s; nothing was renamed. Try again.")
        log(f"Active connections terminated on {name!r}: {ended}")
        return ended

    def swap(self, pg: PgClient, new: str, target_exists: bool, log: RunLog) -> str | None:
        started = time.monotonic()
        previous = self.derived_name("pre_restore") if target_exists else None
        if target_exists:
            self.close_target(pg, self.job.db, log)
        conn = pg.connect("postgres")
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                if previous:
                    cur.execute(f"ALTER DATABASE {quote_ident(self.job.db)} RENAME TO {quote_ident(previous)}")
                cur.execute(f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(self.job.db)}")
            conn.commit()
        except Exception as exc:  # pylint: disable=broad-except
            conn.rollback()
            if target_exists:
                pg.query(f"ALTER DATABASE {quote_ident(self.job.db)} WITH ALLOW_CONNECTIONS true", db="postgres")
            raise PgError(f"renaming {new!r} to {self.job.db!r} failed ({pg.explain(str(exc))}); "
                          f"{self.job.db!r} is unchanged.") from None
        finally:
            conn.close()
        if previous:
            pg.query(f"ALTER DATABASE {quote_ident(previous)} WITH ALLOW_CONNECTIONS true", db="postgres")
            log(f"Swapped: {self.job.db!r} is the restored database; the previous one is kept as {previous!r}")
        else:
            log(f"Restored database renamed to {self.job.db!r}")
        self.timed("swap", started)
        return previous

    def drop(self, pg: PgClient, name: str) -> None:
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,), db="postgres")
        pg.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}", db="postgres")

    def prune_previous(self, pg: PgClient, log: RunLog) -> list[str]:
        """Drop ``<db>__pre_restore_<stamp>`` databases older than previous_retention_days."""
        if not self.job.previous_retention_days:
            return []
        # the same stem derived_name() gives: "__pre_restore_" + stamp is 29 characters
        stem = self.derived_name("pre_restore")[:-len(f"__pre_restore_{self.stamp}")]
        pattern = re.compile(re.escape(stem) + r"__pre_restore_(\d{8}_\d{6})$")
        cutoff = self.now - dt.timedelta(days=self.job.previous_retention_days)
        dropped = []
        for (name,) in pg.query("SELECT datname FROM pg_database", db="postgres"):
            match = pattern.match(name)
            if match and dt.datetime.strptime(match.group(1), STAMP).replace(tzinfo=dt.timezone.utc) < cutoff:
                self.drop(pg, name)
                dropped.append(name)
                log(f"Dropped previous database {name!r} (older than {self.job.previous_retention_days} days)")
        return dropped

    def take_safety_backup(self, log: RunLog) -> dict[str, Any]:
        started = time.monotonic()
        safety_dir = self.job.safety_dir or os.path.join(self.job.backup_dir, "safety")
        log(f"Creating a safety backup of {self.job.db!r} before the restore: {safety_dir}")
        job = BackupJob(conn=self.job.conn.with_db(self.job.db), db=self.job.db, backup_dir=safety_dir,
                        weekly="never", prune=False)
        outcome = run_backup(job)
        if outcome.get("failed"):
            raise DoctorqError(f"the safety backup of {self.job.db!r} failed, so nothing was restored: {outcome['msg']}")
        self.timed("safety_backup", started)
        log(f"Safety backup written: {outcome['backup']['path']} ({human(outcome['backup']['size'])})")
        return outcome["backup"]

    def restore_globals(self, pg: PgClient, path: str, compression: str, log: RunLog) -> None:
        decompress = pipeline.decompressor_argv(compression) or ["cat"]
        with open(path, "rb") as inp:
            first = subprocess.Popen(decompress, stdin=inp, stdout=subprocess.PIPE)
            proc = subprocess.run([pg.tool("psql"), "-X", "-q", "--no-password", "-d", "postgres"], stdin=first.stdout,
                                  env=pg.env("postgres"), capture_output=True, check=False)
            first.stdout.close()
            first.wait()
        errors = [line for line in proc.stderr.decode(errors="replace").splitlines() if "ERROR" in line]
        others = [e for e in errors if "already exists" not in e]
        if others:
            self.warnings.append(f"restoring globals reported {len(others)} error(s): {others[:5]}")
        log(f"Globals restored ({len(errors) - len(others)} existing role(s)/tablespace(s) kept as they were)")

    # -- the run ---------------------------------------------------------------------------
    def run(self, check_mode: bool) -> dict[str, Any]:
        job = self.job
        if not check_mode:
            self.local.ensure_writable()
        log = RunLog(None if check_mode else os.path.join(job.backup_dir, f"restore_{job.db}_{self.stamp}.log"),
                     echo=self.echo)
        log.banner(f"Restore of database {job.db!r}" + (" (check mode: nothing is changed)" if check_mode else ""))
        t0 = time.monotonic()
        status, error, source = "success", None, None
        try:
            if check_mode:
                source = self._plan(log)
            else:
                with Lock(os.path.join(job.backup_dir, f".{job.db}.lock"), f"a backup or restore of database {job.db!r}"):
                    source = self._run(log)
            if self.result.get("pending"):
                status = "pending"
        except DoctorqError as exc:
            status, error = "failure", str(exc)
            log(f"ERROR: {error}")
            self.result.update(failed=True, msg=error)
        self.result.update(durations=self.durations, duration_s=round(time.monotonic() - t0, 3),
                           warnings=self.warnings, log=log.lines, log_file=log.path)
        if not check_mode:
            self._audit(status, error, source)
            summary = (f"Restore of {job.db} on {socket.gethostname()} from {self.result.get('source', {}).get('id')}: "
                       f"{status}" + (f" ({error})" if error else ""))
            self.warnings += job.notifier.send({"event": "restore", "status": status, "database": job.db,
                                                "host": socket.gethostname(), "summary": summary, "error": error,
                                                "source": self.result.get("source"),
                                                "duration_s": self.result["duration_s"]}, log)
        log.close()
        return self.result

    def _describe(self, source: Source) -> None:
        m = source.manifest
        self.result["source"] = {"id": m.id, "database": m.database, "kind": m.kind, "location": m.location,
                                 "ref": source.ref, "started_at": m.started_at, "size": m.size}
        self.result["checksums"] = {"sha256": m.sha256, "md5": m.md5, "verified": False}

    def _names(self, source: Source) -> list[str]:
        names = [source.manifest.file]
        if self.job.restore_globals:
            if not source.manifest.globals:
                raise ConfigError(f"restore_globals is set but backup {source.manifest.id} has no globals file "
                                  "(back up with globals: true).")
            names.append(source.manifest.globals["file"])
        return names

    def _plan(self, log: RunLog) -> Source:
        source = self.find_source(log)
        self._describe(source)
        with PgClient(self.job.conn) as pg:
            exists = self.target_exists(pg)
            pg.tool("pg_restore")
        names = self._names(source)
        state = self.archive_state(source, names, request=False)
        plan: dict[str, Any] = {"target_exists": exists, "confirmation_ok": not exists or self.job.confirm == self.job.db,
                                "archive_state": state}
        if state == "available":
            m = source.manifest
            self.fetch_verified(source, m.file, m.size, m.sha256, m.md5, log, keep=False)
            self.result["checksums"]["verified"] = True
        if exists:
            plan["safety_backup"] = self.job.safety_backup
        if self.job.mode == "swap":
            plan["restore_into"] = self.derived_name("restoring")
            if exists:
                plan["rename_target_to"] = self.derived_name("pre_restore")
                plan["drop_previous"] = self.job.drop_previous
        else:
            plan["drop_and_recreate"] = exists
        self.result.update(plan=plan, changed=True)
        log(f"Plan: {json.dumps(plan, sort_keys=True)}")
        return source

    def _run(self, log: RunLog) -> Source:
        job = self.job
        source = self.find_source(log)
        self._describe(source)
        m = source.manifest
        log(f"Backup found: {source.ref} ({m.started_at}, {human(m.size)}, {m.table_count} tables)")
        with PgClient(job.conn) as pg:
            exists = self.target_exists(pg)
            self.check_confirmation(exists)
            if exists:
                log(f"Confirmation received for {job.db!r}")
            pg.tool("pg_restore")
            names = self._names(source)
            if self._wait_for_archive(source, names, log) == "pending":
                return source
            local_path = self.fetch_verified(source, m.file, m.size, m.sha256, m.md5, log, keep=True)
            self.result["checksums"]["verified"] = True
            globals_path = None
            if job.restore_globals:
                g = m.globals
                globals_path = self.fetch_verified(source, g["file"], g["size"], g["sha256"], g["md5"], log, keep=True)
            try:
                if exists and job.safety_backup:
                    self.result["safety_backup"] = self.take_safety_backup(log)["path"]
                if globals_path:
                    self.restore_globals(pg, globals_path, m.compression, log)
                if job.mode == "swap":
                    self._swap_mode(pg, local_path, m, exists, log)
                else:
                    self._replace_mode(pg, local_path, m, exists, log)
                self.result["pruned_previous"] = self.prune_previous(pg, log)
            finally:
                if isinstance(source.store, S3Store):
                    for path in (local_path, globals_path):
                        if path:
                            pipeline.remove_quietly(path)
        log("=" * 41)
        log("RESTORE COMPLETED SUCCESSFULLY")
        log("=" * 41)
        return source

    def _wait_for_archive(self, source: Source, names: list[str], log: RunLog) -> str:
        state = self.archive_state(source, names, request=True)
        deadline = time.monotonic() + self.job.wait_timeout
        while state == "pending" and time.monotonic() < deadline:
            log(f"Waiting for the archive restore of {source.manifest.id} ({self.job.archive_tier} tier)...")
            time.sleep(min(self.job.poll_interval, max(0.0, deadline - time.monotonic())))
            state = self.archive_state(source, names, request=False)
        if state == "pending":
            hours = {"Expedited": "1-5 minutes", "Standard": "3-5 hours (12 for DEEP_ARCHIVE)",
                     "Bulk": "5-12 hours (48 for DEEP_ARCHIVE)"}[self.job.archive_tier]
            msg = (f"{source.ref} is in an archive tier; the restore from the archive is "
                   f"{'requested' if self.result.get('changed') else 'in progress'} ({self.job.archive_tier}, usually "
                   f"{hours}). Run this restore again later; it picks up where it left off. Nothing was changed in "
                   "the database.")
            log(msg)
            self.result.update(pending=True, msg=msg)
        return state

    def _swap_mode(self, pg: PgClient, local_path: str, m: Manifest, exists: bool, log: RunLog) -> None:
        new = self.derived_name("restoring")
        log(f"Restoring into a new database {new!r}...")
        self.create_database(pg, new, self.db_settings(pg, self.job.db) if exists else None)
        self.result["changed"] = True
        try:
            self.pg_restore(pg, local_path, m.compression, new, log)
            self.result["tables"] = self.verify_restored(pg, new, m, log)
            if exists:
                self.copy_grants(pg, self.job.db, new)
            previous = self.swap(pg, new, exists, log)
        except BaseException:
            self.drop(pg, new)
            log(f"Dropped the half-restored database {new!r}; {self.job.db!r} is untouched")
            raise
        self.result["previous_database"] = previous
        if previous and self.job.drop_previous:
            self.drop(pg, previous)
            log(f"Dropped the previous database {previous!r} (drop_previous)")
            self.result["previous_dropped"] = True

    def _replace_mode(self, pg: PgClient, local_path: str, m: Manifest, exists: bool, log: RunLog) -> None:
        settings = self.db_settings(pg, self.job.db) if exists else None
        if exists:
            self.close_target(pg, self.job.db, log)
            log(f"Dropping the existing database {self.job.db!r}...")
            pg.query(f"DROP DATABASE {quote_ident(self.job.db)}", db="postgres")
        self.result["changed"] = True
        try:
            self.create_database(pg, self.job.db, settings)
            self.pg_restore(pg, local_path, m.compression, self.job.db, log)
            self.result["tables"] = self.verify_restored(pg, self.job.db, m, log)
        except DoctorqError as exc:
            safety = self.result.get("safety_backup")
            if not safety:
                self.drop(pg, self.job.db)
                raise
            log(f"Restore failed ({exc}); restoring the safety backup {safety}...")
            try:
                self.drop(pg, self.job.db)
                self.create_database(pg, self.job.db, settings)
                self.pg_restore(pg, safety, BackupJob.compression, self.job.db, log)
            except DoctorqError as again:
                raise DoctorqError(f"{exc} Restoring the safety backup {safety} failed too ({again}); {self.job.db!r} "
                                   f"is incomplete: restore {safety} by hand (source={safety}).") from None
            self.result["recovered_from_safety_backup"] = True
            raise DoctorqError(f"{exc} The database {self.job.db!r} was recovered from the safety backup {safety}.") from None

    def _audit(self, status: str, error: str | None, source: Source | None) -> None:
        """One JSON line per restore in ``<backup_dir>/restore_audit.jsonl``: who, what, when, from which backup, outcome."""
        path, warning = append_audit(self.job.backup_dir, iso(self.now), iso(utcnow()), {
            "database": self.job.db, "mode": self.job.mode, "source": self.result.get("source"), "status": status,
            "error": error, "safety_backup": self.result.get("safety_backup"),
            "previous_database": self.result.get("previous_database"), "durations": self.durations})
        if path:
            self.result["audit_file"] = path
        else:
            self.warnings.append(warning)


def run_restore(job: RestoreJob, *, check_mode: bool = False, echo: IO[str] | None = None) -> dict[str, Any]:
    """Restore one database. Returns the result; ``failed``/``msg`` on failure, ``pending`` while archived."""
    return _Restore(job, echo).run(check_mode)
