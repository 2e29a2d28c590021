"""pg_restore_safe of a directory backup from S3 against a bare local `pg_restore -j2` and today's single stream.

    .venv/bin/python benchmarks/restore_dir_bench.py [--scale 100] [--text-rows 1000000] [--jobs 2] [--rounds 3]

Builds the text/jsonb database of issue 13 (`pgbench -i -s N` plus a table of
text and jsonb rows, backup_bench.py's make_db) in a throwaway PostgreSQL 15
and starts a SeaweedFS, both from scripts/testbed.py. Makes two backups of it
with the engine (pg_backup's job) to SeaweedFS: a directory backup (`jobs` J,
gzip) and a default one-file backup (zstd, one stream). Then N rounds, each
side once per round, the order reversed every other round (benchlib.interleave):

- dir:    the whole pg_restore_safe restore of the directory backup, with
          `jobs` J, in this process through the engine the module calls
          (`run_restore`): found by its s3:// URI from an empty backup_dir (every
          byte comes from the bucket), every object downloaded in parallel and
          hashed against the manifest, a safety backup of the existing small
          target (`pgbench -i -s 1`), `pg_restore -j J` into a new database,
          table checks, swap;
- bare:   `pg_restore -j J --exit-on-error -d fresh DIR` of the same directory,
          kept on local disk (no download, no checks; CREATE DATABASE not timed);
- single: the same pg_restore_safe restore of the one-file backup with the
          default jobs (today's restore: `zstd -dc | pg_restore`, one stream).

``--target full``: the target restored over is a copy of the whole database
(CREATE DATABASE ... TEMPLATE, not timed) instead of `pgbench -i -s 1`, so the
safety backup costs what it costs over a live database of that size.

Between runs (not timed): restored and previous databases dropped, the
target made again, CHECKPOINT. Wall seconds, CPU seconds of the child
processes (pg_restore and its workers, zstd, the safety pg_dump; not the
server's), and this process's peak RSS so far. Prints the medians and issue
13's ratios (dir at most 1.1 x bare and at most 0.9 x single); writes
benchmarks/output/restore-dir-<time>/results.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import benchlib
from benchlib import MB, testbed
import backup_bench

TARGETS = {"dir_vs_bare": 1.1, "dir_vs_single": 0.9}
SIDES = ("dir", "bare", "single")
PHASES = ("download", "safety_backup", "restore", "verify_after", "swap")

sys.path.insert(0, benchlib.collections_dir())

# pylint: disable=wrong-import-position
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup  # noqa: E402
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, run_restore  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Bench(backup_bench.Bench):
    """backup_bench's servers and database (make_db), with this benchmark's sides."""

    def __init__(self, args: argparse.Namespace) -> None:  # pylint: disable=super-init-not-called
        benchlib.Bench.__init__(self, args, "restore-dir")  # pylint: disable=non-parent-init-called
        self.s3_option = {**self.s3.s3_option(self.bucket), "prefix": "bench"}
        self.target = "target"
        self.backups: dict[str, dict[str, Any]] = {}

    def sql(self, statement: str, db: str = "postgres") -> list[tuple]:
        return self.pg.query(statement, dbname=db)

    def drop(self, *names: str) -> None:
        for name in names:
            testbed.drop_database(self.pg, name)

    def tool(self, name: str) -> str:
        return os.path.join(self.pg.bin_dir, name)

    # -- setup -------------------------------------------------------------------
    def setup(self) -> None:
        made = self.make_db(self.args.scale)
        db = made["db"]
        self.results["db"] = made
        self.expected = self.fingerprint(db)
        for name, extra in (("dir", {"jobs": self.args.jobs, "compression": "gzip"}), ("single", {})):
            job = BackupJob.from_params({**self.pg.params(db), "backup_dir": os.path.join(self.out, f"backup-{name}"),
                                         "s3": self.s3_option, "weekly": "never", "prune": False, **extra})
            started = time.monotonic()
            result = run_backup(job)
            assert not result.get("failed"), result.get("msg")
            self.backups[name] = {**result["backup"], "wall_s": round(time.monotonic() - started, 1)}
            print(f"# {name} backup: {result['backup']['size'] / MB:.0f} MB in {self.backups[name]['wall_s']:.0f}s "
                  f"({result['backup']['s3_uri']})", flush=True)
        self.results["backups"] = self.backups
        shutil.rmtree(os.path.join(self.out, "backup-single"))  # restores read the bucket; bare reads backup-dir
        if self.args.target == "full":
            self.source_db = db  # kept: each target is a copy of it
        else:
            self.drop(db)

    def fingerprint(self, db: str) -> list[tuple]:
        """Row counts and a sum: enough to tell a complete restore."""
        extra = ", (SELECT count(*) FROM documents)" if self.args.text_rows else ""
        return self.sql("SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts)"
                        f"{extra}", db)

    def make_target(self) -> None:
        self.drop(self.target)
        if self.args.target == "full":
            self.sql(f'CREATE DATABASE "{self.target}" TEMPLATE "{self.source_db}"')
            return
        self.sql(f'CREATE DATABASE "{self.target}"')
        subprocess.run([self.tool("pgbench"), "-i", "-q", "-s", "1", self.target], env=self.pg_env, check=True,
                       capture_output=True)

    def settle(self) -> None:
        self.sql("CHECKPOINT")
        time.sleep(1)

    # -- the sides -----------------------------------------------------------------
    def ours(self, name: str, check: bool) -> dict[str, Any]:
        self.make_target()
        restore_dir = os.path.join(self.out, "restore-host")
        params = {**self.pg.params(self.target), "source": self.backups[name]["s3_uri"], "s3": self.s3_option,
                  "backup_dir": restore_dir, "confirm": self.target,
                  **({"jobs": self.args.jobs} if name == "dir" else {})}
        self.settle()
        started, cpu = time.monotonic(), children_cpu()
        result = run_restore(RestoreJob.from_params(params))
        wall, cpu = time.monotonic() - started, children_cpu() - cpu
        assert not result.get("failed"), result.get("msg")
        if check:
            assert self.fingerprint(self.target) == self.expected, "restored database differs from the source"
        self.drop(self.target, result["previous_database"])
        shutil.rmtree(restore_dir)
        phases = {p: result["durations"].get(p, 0.0) for p in PHASES}
        return {"wall": wall, "cpu": cpu, "size": self.backups[name]["size"], "peak_mb": peak_mb(), **phases,
                "other": wall - sum(phases.values())}

    def bare(self, check: bool) -> dict[str, Any]:
        fresh = "fresh"
        self.drop(fresh)
        self.sql(f'CREATE DATABASE "{fresh}"')
        self.settle()
        started, cpu = time.monotonic(), children_cpu()
        subprocess.run([self.tool("pg_restore"), f"-j{self.args.jobs}", "--exit-on-error", "-d", fresh,
                        self.backups["dir"]["path"]], env=self.pg_env, check=True)
        wall, cpu = time.monotonic() - started, children_cpu() - cpu
        if check:
            assert self.fingerprint(fresh) == self.expected, "restored database differs from the source"
        self.drop(fresh)
        return {"wall": wall, "cpu": cpu, "size": self.backups["dir"]["size"], "peak_mb": 0.0}

    def run(self) -> None:
        try:
            self.setup()
            self.results.update(benchlib.interleave(
                SIDES, self.args.rounds,
                lambda side, round_no: self.bare(round_no == 1) if side == "bare" else self.ours(side, round_no == 1)))
        finally:
            self.save()
        print(report(self.results))


def report(results: dict[str, Any]) -> str:
    med = results["median"]
    args = results["args"]
    n = len(results["rounds"])
    per_round = {side: sorted(r[side]["wall"] / r["bare"]["wall"] for r in results["rounds"])[n // 2] for side in SIDES}
    extra = f" + {args.get('text_rows'):,} rows of text/jsonb" if args.get("text_rows") else ""
    backups = results["backups"]
    target = ("a copy of the whole database" if args.get("target") == "full"
              else "a small database (`pgbench -i -s 1`)")
    lines = [f"\npgbench -s {args['scale']}{extra} ({results['db']['db_bytes'] / MB:.0f} MB database) over {target}; "
             f"directory backup (jobs {args['jobs']}, gzip) "
             f"{backups['dir']['size'] / MB:.0f} MB, one-file backup (zstd) {backups['single']['size'] / MB:.0f} MB, "
             f"both in SeaweedFS; medians of {n} interleaved rounds",
             "| | wall s | x bare | x bare, per round | client CPU s | download+hash | safety backup | restore | "
             "verify after | swap | other |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"bare": f"bare: `pg_restore -j{args['jobs']}` of the local directory",
              "dir": f"pg_restore_safe from S3, directory backup, jobs {args['jobs']}",
              "single": "pg_restore_safe from S3, one-file backup, default jobs (one stream)"}
    for side in ("bare", "dir", "single"):
        m = {**med[side], "other": statistics.median(r[side]["wall"] - sum(r[side].get(p, 0.0) for p in PHASES)
                                                     for r in results["rounds"])}
        phases = " | ".join(f"{m.get(p, 0.0):.1f}" if side != "bare" else "" for p in (*PHASES, "other"))
        lines.append(f"| {labels[side]} | {m['wall']:.1f} | {m['wall'] / med['bare']['wall']:.2f} | "
                     f"{per_round[side]:.2f} | {m['cpu']:.1f} | {phases} |")
    vs_bare, vs_single = med["dir"]["wall"] / med["bare"]["wall"], med["dir"]["wall"] / med["single"]["wall"]
    lines.append(f"targets: dir <= {TARGETS['dir_vs_bare']} x bare: {vs_bare:.2f} "
                 f"({'met' if vs_bare <= TARGETS['dir_vs_bare'] else 'MISSED'}); dir <= {TARGETS['dir_vs_single']} x "
                 f"single: {vs_single:.2f} ({'met' if vs_single <= TARGETS['dir_vs_single'] else 'MISSED'})")
    lines.append(f"peak RSS of the Python process (whole run): {max(med[s]['peak_mb'] for s in SIDES):.0f} MB")
    lines.append(benchlib.load_line(results))
    return "\n".join(lines)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale of the restored database (100: ~1.5 GB)")
    parser.add_argument("--text-rows", type=int, default=1_000_000,
                        help="rows of text and jsonb added to the database (issue 13's database: 1,000,000)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs of the directory backup and of its restores")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", choices=("small", "full"), default="small",
                        help="what the restores replace: a small database (pgbench -s 1), or a copy of the whole "
                             "database (the safety backup then as big as a real one)")


if __name__ == "__main__":
    sys.exit(benchlib.main(__doc__, "restore-dir", options, Bench, report))
