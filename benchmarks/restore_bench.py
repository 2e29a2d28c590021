"""pg_restore_safe from S3 against a bare `pg_restore -j2` of a local file, side by side, interleaved.

    .venv/bin/python benchmarks/restore_bench.py [--scale 100] [--rounds 3] [--target-scale 1]

Builds a pgbench database (`pgbench -i -s N`; -s 100 is about 1.5 GB) in a
throwaway PostgreSQL 15 cluster and starts a SeaweedFS, both from
scripts/testbed.py, on 127.0.0.1. Makes one backup of it with the engine
(pg_backup's job) to SeaweedFS, and one plain `pg_dump -Fc -f FILE`. Then N
rounds, rotating which side goes first:

- ours (jobs 2, jobs 1): the whole pg_restore_safe restore, in this process
  through the engine the module calls (`run_restore`): the backup found by
  its s3:// URI (from an empty backup_dir, so every byte comes from the
  bucket), downloaded and hashed (sha256+md5) on the way, a safety backup of
  the existing small target database (`pgbench -i -s 1`), pg_restore into
  `<db>__restoring_<ts>` (jobs 2: decompress the archive to a work file, then
  `pg_restore -j2`; jobs 1: `zstd -dc | pg_restore`, no decompressed copy),
  table verification, swap in one transaction. Timed from the call to its
  return; the phases come from the result's `durations`;
- bare: `pg_restore -j2 --exit-on-error -d fresh FILE` of the plain local
  file into a freshly created database (the CREATE DATABASE is not timed).

Between runs (not timed): the restored and previous databases are dropped,
the small target is made again, CHECKPOINT. Prints medians, the ratios
ours/bare and the issue's target (<= 1.25); writes everything to
benchmarks/output/restore-<time>/results.json.
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

TARGET = 1.25
SIDES = ("ours_j2", "bare", "ours_j1")
PHASES = ("download", "safety_backup", "restore", "verify_after", "swap")


def children_cpu() -> float:
    """CPU seconds (user + sys) of every finished child process so far: pg_restore and its workers, zstd, pg_dump."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


sys.path.insert(0, benchlib.collections_dir())

# pylint: disable=wrong-import-position
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, run_backup  # noqa: E402
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgConn  # noqa: E402
from ansible_collections.doctorq.backup.plugins.module_utils.policy import JobPolicy  # noqa: E402
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, run_restore  # noqa: E402
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config  # noqa: E402


class Bench(benchlib.Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "restore", rounds=[])
        self.s3_option = {**self.s3.s3_option(self.bucket), "prefix": "bench"}
        self.source_db, self.target = "bench", "target"

    def tool(self, name: str) -> str:
        return os.path.join(self.pg.bin_dir, name)

    def sql(self, statement: str, db: str = "postgres") -> list[tuple]:
        return self.pg.query(statement, dbname=db)

    def drop(self, *names: str) -> None:
        for name in names:
            testbed.drop_database(self.pg, name)

    # -- setup ---------------------------------------------------------------
    def setup(self) -> None:
        facts = self.results
        self.sql(f'CREATE DATABASE "{self.source_db}"')
        started = time.monotonic()
        subprocess.run([self.tool("pgbench"), "-i", "-q", "-s", str(self.args.scale), self.source_db],
                       env=self.pg_env, check=True, capture_output=True)
        facts["build_s"] = round(time.monotonic() - started, 1)
        facts["db_bytes"] = self.sql(f"SELECT pg_database_size('{self.source_db}')")[0][0]
        print(f"# {self.source_db}: pgbench -s {self.args.scale}, {facts['db_bytes'] / MB:.0f} MB, "
              f"built in {facts['build_s']:.0f}s", flush=True)

        job = BackupJob(conn=PgConn.from_params(self.pg.params(self.source_db)), db=self.source_db,
                        backup_dir=os.path.join(self.out, "backup-host"), s3=S3Config.from_params(self.s3_option),
                        policy=JobPolicy(weekly="never", prune=False))
        started = time.monotonic()
        made = run_backup(job)
        assert not made.get("failed"), made.get("msg")
        facts["backup"] = {"s3_uri": made["backup"]["s3_uri"], "size": made["backup"]["size"],
                           "wall_s": round(time.monotonic() - started, 1)}
        with open(made["backup"]["path"], "rb") as packed:  # what jobs 2 writes to its work file
            zstd = subprocess.Popen(["zstd", "-dc"], stdin=packed, stdout=subprocess.PIPE)
            facts["backup"]["plain_size"] = int(subprocess.run(["wc", "-c"], stdin=zstd.stdout, capture_output=True,
                                                               check=True).stdout)
            zstd.stdout.close()
            assert zstd.wait() == 0
        shutil.rmtree(os.path.join(self.out, "backup-host"))  # our restores read the bucket, nothing local

        self.plain_file = os.path.join(self.out, "bench.dump")
        started = time.monotonic()
        subprocess.run([self.tool("pg_dump"), "-Fc", "-f", self.plain_file, self.source_db], env=self.pg_env, check=True)
        facts["pg_dump_file"] = {"size": os.path.getsize(self.plain_file), "wall_s": round(time.monotonic() - started, 1)}
        self.expected = self.fingerprint(self.source_db)
        print(f"# backup to S3: {facts['backup']['size'] / MB:.0f} MB zstd ({facts['backup']['plain_size'] / MB:.0f} MB "
              f"decompressed) in {facts['backup']['wall_s']:.0f}s; pg_dump -Fc file: "
              f"{facts['pg_dump_file']['size'] / MB:.0f} MB in {facts['pg_dump_file']['wall_s']:.0f}s", flush=True)
        # the source is not needed any more: keep the cluster to what the restores make
        self.drop(self.source_db)

    def fingerprint(self, db: str) -> list[tuple]:
        """Enough to tell a complete restore: row counts and a sum over every table."""
        return self.sql("SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts), "
                        "(SELECT count(*) FROM pgbench_branches), (SELECT count(*) FROM pgbench_tellers), "
                        "(SELECT count(*) FROM pgbench_history)", db)

    def make_target(self) -> None:
        """The existing small database the restore replaces (its safety backup is part of the run)."""
        self.drop(self.target)
        self.sql(f'CREATE DATABASE "{self.target}"')
        subprocess.run([self.tool("pgbench"), "-i", "-q", "-s", str(self.args.target_scale), self.target],
                       env=self.pg_env, check=True, capture_output=True)

    def settle(self) -> None:
        self.sql("CHECKPOINT")
        time.sleep(1)

    # -- the sides --------------------------------------------------------------
    def ours(self, jobs: int, check: bool) -> dict[str, Any]:
        self.make_target()
        restore_dir = os.path.join(self.out, "restore-host")
        params = {**self.pg.params(self.target), "source": self.results["backup"]["s3_uri"],
                  "s3": self.s3_option, "backup_dir": restore_dir, "confirm": self.target, "jobs": jobs}
        self.settle()
        started, cpu = time.monotonic(), children_cpu()
        result = run_restore(RestoreJob.from_params(params))
        wall, cpu = time.monotonic() - started, children_cpu() - cpu
        assert not result.get("failed"), result.get("msg")
        if check:
            assert self.fingerprint(self.target) == self.expected, "restored database differs from the source"
        self.drop(self.target, result["previous_database"])
        shutil.rmtree(restore_dir)
        return {"wall": wall, "client_cpu": cpu, "durations": result["durations"], "tables": result["tables"]}

    def bare(self, check: bool) -> dict[str, Any]:
        fresh = "fresh"
        self.drop(fresh)
        self.sql(f'CREATE DATABASE "{fresh}"')
        self.settle()
        started, cpu = time.monotonic(), children_cpu()
        subprocess.run([self.tool("pg_restore"), "-j2", "--exit-on-error", "-d", fresh, self.plain_file],
                       env=self.pg_env, check=True)
        wall, cpu = time.monotonic() - started, children_cpu() - cpu
        if check:
            assert self.fingerprint(fresh) == self.expected, "restored database differs from the source"
        self.drop(fresh)
        return {"wall": wall, "client_cpu": cpu}

    def side(self, name: str, check: bool) -> dict[str, Any]:
        if name == "bare":
            return self.bare(check)
        return self.ours(int(name[-1]), check)

    # -- the run -----------------------------------------------------------------
    def run(self) -> None:
        try:
            self.setup()
            for round_no in range(1, self.args.rounds + 1):
                shift = (round_no - 1) % len(SIDES)
                order = SIDES[shift:] + SIDES[:shift]
                entry: dict[str, Any] = {"round": round_no, "order": order, "load": os.getloadavg()}
                for name in order:
                    got = self.side(name, check=round_no == 1)
                    entry[name] = got
                    phases = "  ".join(f"{p} {got['durations'].get(p, 0):.1f}" for p in PHASES) if "durations" in got else ""
                    print(f"  round {round_no} {name:8}: wall {got['wall']:6.1f}s  client CPU {got['client_cpu']:5.1f}s  "
                          f"{phases}", flush=True)
                self.results["rounds"].append(entry)
            rounds = self.results["rounds"]
            self.results["median"] = {name: statistics.median(r[name]["wall"] for r in rounds) for name in SIDES}
            self.results["median_client_cpu"] = {name: statistics.median(r[name]["client_cpu"] for r in rounds)
                                                 for name in SIDES}
            self.results["median_round_ratio"] = {
                name: statistics.median(r[name]["wall"] / r["bare"]["wall"] for r in rounds) for name in SIDES}
            self.results["median_phases"] = {
                name: {p: statistics.median(r[name]["durations"].get(p, 0.0) for r in rounds) for p in PHASES}
                for name in SIDES if name != "bare"}
        finally:
            if os.path.exists(getattr(self, "plain_file", "")):
                os.unlink(self.plain_file)
            self.save()
        print(report(self.results))


def report(results: dict[str, Any]) -> str:
    med, phases = results["median"], results["median_phases"]
    bare = med["bare"]
    n = len(results["rounds"])
    lines = [f"\npgbench -s {results['args']['scale']} ({results['db_bytes'] / MB:.0f} MB database; backup "
             f"{results['backup']['size'] / MB:.0f} MB zstd in S3, {results['backup']['plain_size'] / MB:.0f} MB "
             f"decompressed; pg_dump -Fc file {results['pg_dump_file']['size'] / MB:.0f} MB), "
             f"medians of {n} interleaved rounds",
             "| | wall s | x bare | x bare, per round | download+hash | safety backup | restore | verify after | swap | other |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| bare: `pg_restore -j2` of the local `pg_dump -Fc` file | {bare:.1f} | 1.00 | 1.00 | | | | | | |"]
    per_round = results.get("median_round_ratio", {})
    for name, label in (("ours_j2", "pg_restore_safe from S3, jobs 2 (work file + `pg_restore -j2`)"),
                        ("ours_j1", "pg_restore_safe from S3, jobs 1 (`zstd -dc | pg_restore`)")):
        p = phases[name]
        other = med[name] - sum(p[k] for k in PHASES)
        lines.append(f"| {label} | {med[name]:.1f} | {med[name] / bare:.2f} | {per_round.get(name, 0):.2f} | {p['download']:.1f} | "
                     f"{p['safety_backup']:.1f} | {p['restore']:.1f} | {p['verify_after']:.1f} | {p['swap']:.1f} | "
                     f"{other:.1f} |")
    lines.append("(x bare: ratio of the medians; per round: median of the ratios within each round, which cancels "
                 "slow drifts of the machine's load. other: finding the backup, CREATE DATABASE of the new one, grants, "
                 "connections; phases are medians per column, so a row need not add up exactly)")
    if "median_client_cpu" in results:
        cpu = results["median_client_cpu"]
        lines.append("client CPU (user+sys of pg_restore and its workers, zstd, the safety pg_dump; not the server's): "
                     + ", ".join(f"{name} {cpu[name]:.1f}s" for name in SIDES))
    # The module's default is jobs 1 (streaming): that is the restore users get.
    verdict = "met" if med["ours_j1"] / bare <= TARGET else "MISSED"
    lines.append(f"target: whole restore with the default (jobs 1) <= {TARGET} x bare: {med['ours_j1'] / bare:.2f} ({verdict})")
    lines.append(benchlib.load_line(results))
    return "\n".join(lines)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale of the restored database (100: ~1.5 GB)")
    parser.add_argument("--target-scale", type=int, default=1, help="pgbench scale of the existing target replaced")
    parser.add_argument("--rounds", type=int, default=3)


if __name__ == "__main__":
    sys.exit(benchlib.main(__doc__, "restore", options, Bench, report))
