"""The parallel directory dump (dirdump) against bare pg_dump -Fd -j2 and the single-stream floor, interleaved.

    .venv/bin/python benchmarks/dirdump_bench.py [--scale 100] [--text-rows 1000000] [--jobs 2] [--level 6] [--rounds 3]

Builds the text/jsonb database of issue 13 (`pgbench -i -s N` plus a table of
text and jsonb rows, as backup_bench.py --text-rows) in a throwaway
PostgreSQL 15 and starts a SeaweedFS, both from scripts/testbed.py. Then N
rounds, each side once per round, the order reversed every other round:

- bare:  `pg_dump -Fd -j J -Z L -f DIR` to a local directory, nothing else;
- disk:  dirdump with jobs J, same compression: every file hashed (SHA-256 +
         MD5) as pg_dump closes it, sidecars written (plugins/module_utils/dirdump.py);
- disk_s3: the same, each file also uploaded to SeaweedFS (and verified) as it closes;
- floor: `pg_dump -Fc -Z0 --no-sync -f /dev/null` (backup_bench's floor), one stream: what any single-stream
         pipeline costs at least.

Each side runs as a child process measured by os.wait4 (pg_dump, which it
waits for, included): wall and CPU seconds, peak RSS of every program of its
tree; dirdump's child reports its own VmHWM (the Python process). The
server's backends and SeaweedFS are not counted. Prints the medians with the
ratios of issue 13's targets; writes benchmarks/output/<run>/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from typing import Any

import benchlib
from benchlib import MB, testbed
import backup_bench
from backup_bench import run_child

TARGETS = {"jobs_vs_bare": 1.15, "python_peak_mb": 200}

# The child that runs dirdump: the engine's own code, then its peak RSS (VmHWM) and CPU split.
OURS_RUNNER = textwrap.dedent("""
    import json, os, re, resource, sys
    from ansible_collections.doctorq.backup.plugins.module_utils import dirdump, s3 as s3util
    from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, PgConn, client_major
    from ansible_collections.doctorq.backup.plugins.module_utils.storage import object_tags
    with open(os.environ["BENCH_CONFIG"]) as handle:
        cfg = json.load(handle)
    sink = None
    if cfg.get("s3"):
        s3cfg = s3util.S3Config.from_params(cfg["s3"])
        sink = dirdump.S3Upload(s3util.s3_client(s3cfg), s3cfg, cfg["key"], tags=object_tags("daily", data=True))
    with PgClient(PgConn.from_params(cfg["pg"])) as pg:
        pg_dump = pg.tool("pg_dump")
        argv = dirdump.dump_argv([pg_dump, "--no-password"], cfg["dir"], cfg["jobs"],
                                 dirdump.compress_option("gzip", cfg["level"], client_major(pg_dump)))
        result = dirdump.run(argv, pg.env(cfg["db"]), cfg["dir"], sink, workers=cfg["workers"])
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/self/status") as status:
        hwm = int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1))
    with open(os.environ["BENCH_STATS"], "w") as out:
        json.dump({"self_hwm_kb": hwm, "self_cpu": me.ru_utime + me.ru_stime, "children_cpu": kids.ru_utime + kids.ru_stime,
                   "size": result.size, "files": len(result.files), "exited_s": result.exited_s,
                   "duration_s": result.duration_s,
                   "stored_before_exit": sum(f.stored_s < result.exited_s for f in result.files)}, out)
""")


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


class Bench(backup_bench.Bench):
    """backup_bench's servers and database (make_db), with this benchmark's sides."""

    def __init__(self, args: argparse.Namespace) -> None:  # pylint: disable=super-init-not-called
        benchlib.Bench.__init__(self, args, "dirdump")  # pylint: disable=non-parent-init-called
        self.collections = benchlib.collections_dir()

    def bare(self, db: str, round_no: int) -> dict[str, Any]:
        folder = os.path.join(self.out, f"bare-{round_no}.dir")
        run = run_child([os.path.join(self.pg.bin_dir, "pg_dump"), "-Fd", f"-j{self.args.jobs}", f"-Z{self.args.level}",
                         "-f", folder, db], self.pg_env)
        size = dir_size(folder)
        shutil.rmtree(folder)
        return {"wall": run["wall"], "cpu": run["cpu"], "size": size, "peak_mb": max(run["peaks_kb"].values()) / 1024}

    def _ours(self, db: str, round_no: int, to_s3: bool) -> dict[str, Any]:
        name = f"{'s3' if to_s3 else 'disk'}-{round_no}.dir"
        folder = os.path.join(self.out, name)
        key = f"dirdump/{name}"
        config = {"pg": self.pg.params(db), "db": db, "dir": folder, "jobs": self.args.jobs, "level": self.args.level,
                  "workers": self.args.workers, "key": key,
                  "s3": {**self.s3.s3_option(self.bucket), "prefix": "dirdump"} if to_s3 else None}
        config_path = os.path.join(self.out, "ours.json")
        testbed._write_private(config_path, json.dumps(config))  # pylint: disable=protected-access
        stats_path = os.path.join(self.out, "ours-stats.json")
        env = {**os.environ, "PYTHONPATH": self.collections, "BENCH_CONFIG": config_path, "BENCH_STATS": stats_path}
        run = run_child([sys.executable, "-c", OURS_RUNNER], env)
        with open(stats_path, encoding="utf-8") as handle:
            stats = json.load(handle)
        if to_s3:
            keys = [o["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key + "/")
                    for o in page.get("Contents", [])]
            assert len(keys) == stats["files"], (len(keys), stats["files"])
            for obj in keys:
                self.client.delete_object(Bucket=self.bucket, Key=obj)
        shutil.rmtree(folder)
        for suffix in (".sha256", ".md5"):
            os.unlink(folder + suffix)
        python = max(stats["self_hwm_kb"], run["peaks_kb"].get("python", 0), run["peaks_kb"].get("python3", 0))
        children = {n: kb for n, kb in run["peaks_kb"].items() if not n.startswith("python")}
        return {"wall": run["wall"], "cpu": run["cpu"], "size": stats["size"], "python_peak_mb": python / 1024,
                "peak_mb": max([python, *children.values()]) / 1024, "python_cpu": stats["self_cpu"],
                "children_cpu": stats["children_cpu"], "files": stats["files"],
                "stored_before_exit": stats["stored_before_exit"], "pg_dump_exit_s": stats["exited_s"]}

    def disk(self, db: str, round_no: int) -> dict[str, Any]:
        return self._ours(db, round_no, to_s3=False)

    def disk_s3(self, db: str, round_no: int) -> dict[str, Any]:
        return self._ours(db, round_no, to_s3=True)

    def run(self) -> None:
        try:
            facts = self.make_db(self.args.scale)
            facts.update(benchlib.interleave(("bare", "disk", "disk_s3", "floor"), self.args.rounds,
                                             lambda side, round_no: getattr(self, side)(facts["db"], round_no)))
            self.results["dirdump"] = facts
        finally:
            self.save()
        print(report(self.results))


def report(results: dict[str, Any]) -> str:
    facts, args = results.get("dirdump"), results["args"]
    if not facts:
        return "no complete run"
    med = facts["median"]
    bare, floor = med["bare"], med["floor"]
    lines = [f"\npgbench -s {args['scale']} + {args['text_rows']:,} rows of text/jsonb ({facts['db_bytes'] / MB:.0f} MB "
             f"database), jobs {args['jobs']}, gzip -Z{args['level']}, medians of {len(facts['rounds'])} interleaved rounds",
             "| | wall s | CPU s | output MB | peak RSS MB | wall / bare -Fd | wall / floor |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    rows = [("bare: pg_dump -Fd -j{jobs} -Z{level} to a directory", bare),
            ("dirdump to disk: hashed as closed, sidecars", med["disk"]),
            ("dirdump to disk + SeaweedFS: hashed and uploaded as closed", med["disk_s3"]),
            ("floor: pg_dump -Fc -Z0 -f /dev/null (one stream)", floor)]
    for label, got in rows:
        peak = (f"Python {got['python_peak_mb']:.0f}, all {got['peak_mb']:.0f}" if "python_peak_mb" in got
                else f"{got['peak_mb']:.0f}")
        lines.append(f"| {label.format(**args)} | {got['wall']:.2f} | {got['cpu']:.2f} | {got['size'] / MB:.1f} | {peak} | "
                     f"{got['wall'] / bare['wall']:.2f} | {got['wall'] / floor['wall']:.2f} |")
    verdict = []
    for side in ("disk", "disk_s3"):
        ratio = med[side]["wall"] / bare["wall"]
        verdict.append(f"{side} {ratio:.2f} {'<=' if ratio <= TARGETS['jobs_vs_bare'] else '>'} "
                       f"{TARGETS['jobs_vs_bare']} x bare")
        verdict.append(f"{side} {'below' if med[side]['wall'] < floor['wall'] else 'NOT below'} the floor")
        peak = med[side]["python_peak_mb"]
        verdict.append(f"{side} Python peak {peak:.0f} MB {'<=' if peak <= TARGETS['python_peak_mb'] else '>'} 200 MB")
    lines.append("targets (issue 13): " + ", ".join(verdict))
    lines.append(f"files stored before pg_dump exited (median): disk {med['disk']['stored_before_exit']:.0f} of "
                 f"{med['disk']['files']:.0f}, disk + S3 {med['disk_s3']['stored_before_exit']:.0f} of "
                 f"{med['disk_s3']['files']:.0f}")
    if "load_after" in results:
        lines.append(benchlib.load_line(results))
    return "\n".join(lines)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100: ~1.5 GB)")
    parser.add_argument("--text-rows", type=int, default=1_000_000, help="rows of the text/jsonb table")
    parser.add_argument("--jobs", type=int, default=2, help="pg_dump -j, for bare and dirdump")
    parser.add_argument("--level", type=int, default=6, help="gzip level (-Z), the same for bare and dirdump")
    parser.add_argument("--workers", type=int, default=2, help="dirdump's files hashed/uploaded at once")
    parser.add_argument("--rounds", type=int, default=3)


if __name__ == "__main__":
    sys.exit(benchlib.main(__doc__, "dirdump", options, Bench, report))
