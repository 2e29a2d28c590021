# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A verified dump into a database, and the proof that it arrived: pg_restore, then every table checked.

``load_dump`` streams the archive through its decompressor into
``pg_restore --exit-on-error`` (one job: no extra disk space), or, with more
jobs, decompresses it once into the work dir, since ``pg_restore -j`` needs a
seekable file. A directory backup (pg_dump -Fd, its files compressed by
pg_dump) is read in place by ``pg_restore -j N``. A pg_restore newer than
the server runs without ``--exit-on-error`` and succeeds when its only errors
are the settings the server does not know (restore_client.py); one that
cannot read the archive says what to install. ``check_tables`` compares
the restored tables with the manifest's: every table present, exact row
counts equal, estimates within the tolerance. Both add their seconds to the run's ``durations``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest
from ansible_collections.doctorq.backup.plugins.module_utils.errors import IntegrityError, PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, quote_ident
from ansible_collections.doctorq.backup.plugins.module_utils.pg_admin import conninfo_db
from ansible_collections.doctorq.backup.plugins.module_utils.restore_client import (
    harmless_errors, real_errors, restored_anyway, unreadable,
)
from ansible_collections.doctorq.backup.plugins.module_utils.restore_source import add_duration


def stopped_reading(index: int, status: int, _stderr: str) -> bool:
    """``Pipe.wait``'s accept for ``decompressor | pg_restore`` when pg_restore may be done before the archive's end.

    Listing the contents (``--list``) or restoring some entries
    (``--use-list``), it stops reading once it has what it needs: the
    decompressor then dies of SIGPIPE, which is no failure when pg_restore
    itself succeeded (its own failure is reported either way).
    """
    return index == 0 and status == -signal.SIGPIPE


def load_dump(pg: PgClient, local_path: str, compression: str, dbname: str, log: Callable[[str], None], *,
              jobs: int, no_owner: bool, no_privileges: bool, work_dir: Callable[[], str],
              durations: dict[str, float], use_list: str | None = None) -> None:
    """pg_restore ``local_path`` (a file, or a directory backup's directory) into the empty ``dbname``; ``jobs`` 0: one per core."""
    started = time.monotonic()
    path = pg.tool("pg_restore")
    harmless = harmless_errors(pg, path)
    argv = [path, "--no-password", f"--dbname={conninfo_db(dbname)}"] + ([] if harmless else ["--exit-on-error"])
    if no_owner:
        argv.append("--no-owner")
    if no_privileges:
        argv.append("--no-privileges")
    if use_list:  # a partial restore: only the entries listed (restore_partial.py)
        argv.append(f"--use-list={use_list}")
    jobs = jobs or os.cpu_count() or 1
    decompress = pipeline.decompressor_argv(compression)
    env = pg.env(dbname)
    try:
        if os.path.isdir(local_path):  # pg_dump's directory format: each file decompressed by pg_restore itself
            procs.run(argv + [f"--jobs={jobs}", local_path], env=env)
        elif jobs > 1:
            # Parallel restore needs a seekable archive: decompress it once to the work dir.
            plain = local_path
            if decompress:
                plain = os.path.join(work_dir(), f".{os.path.basename(local_path)}.plain")
                try:
                    with open(plain, "wb") as out, open(local_path, "rb") as inp:
                        procs.run(decompress, stdin=inp, stdout=out)
                except BaseException:
                    pipeline.remove_quietly(plain)
                    raise
            try:
                procs.run(argv + [f"--jobs={jobs}", plain], env=env)
            finally:
                if plain != local_path:
                    pipeline.remove_quietly(plain)
        else:
            with open(local_path, "rb") as inp, open(os.devnull, "wb") as out, \
                    procs.Pipe([decompress, argv], stdin=inp, stdout=out, env=env) as pipe:
                pipe.wait(accept=stopped_reading if use_list else None)
    except procs.ProcessFailed as exc:
        if exc.name != "pg_restore":
            raise PgError(f"decompressing {local_path} for the restore into {dbname!r} failed: {exc}") from None
        if not restored_anyway(exc.status, exc.stderr, harmless):
            detail = "\n".join(real_errors(exc.stderr, harmless)) if harmless else ""
            why = unreadable(exc.stderr, path) or pg.explain(detail[-1500:] or exc.stderr[-1500:] or str(exc))
            raise PgError(f"pg_restore into {dbname!r} failed: {why}") from None
        log(f"pg_restore set {', '.join(harmless)}, which PostgreSQL {pg.server_version()[1]} does not know: "
            "ignored (every other statement succeeded)")
    add_duration(durations, "restore", started)
    log(f"pg_restore into {dbname!r} finished in {time.monotonic() - started:.1f}s ({jobs} job(s))")


def check_tables(pg: PgClient, dbname: str, manifest: Manifest, log: Callable[[str], None], *,
                 row_tolerance: float, durations: dict[str, float]) -> dict[str, Any]:
    """Every table of the manifest is there; exact row counts match; estimates within tolerance."""
    started = time.monotonic()
    facts = {f"{t['schema']}.{t['name']}": t for t in pg.table_facts(dbname)}
    expected = {f"{t['schema']}.{t['name']}": t for t in manifest.tables}
    missing = sorted(set(expected) - set(facts))
    mismatched = []
    big = [t for name, t in expected.items() if name in facts and t.get("rows") is None]
    if big:  # by schema and name: either may hold a '.'
        pg.query("ANALYZE " + ", ".join(quote_ident(t["schema"]) + "." + quote_ident(t["name"]) for t in big),
                 db=dbname)
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
            if abs(est - want["rows_estimate"]) > max(1000, row_tolerance * want["rows_estimate"]):
                mismatched.append(f"{name}: about {est} rows, the backup's estimate was {want['rows_estimate']}")
    report = {"expected": len(expected), "found": len(facts), "missing": missing, "mismatched": mismatched,
              "exact": sum(1 for t in expected.values() if t.get("rows") is not None)}
    add_duration(durations, "verify_after", started)
    if missing or mismatched or len(facts) != len(expected):
        raise IntegrityError(f"the restored database {dbname!r} does not match the backup: "
                             f"{len(facts)} tables for {len(expected)} expected; missing {missing[:10]}; "
                             f"mismatched {mismatched[:10]}.")
    log(f"Tables found: {len(facts)}; every table of the backup is present, row counts match "
        f"({report['exact']} exact, {len(expected) - report['exact']} estimated)")
    return report
