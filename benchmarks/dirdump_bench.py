"""Issue 13's backup benchmark: pg_backup single stream and jobs N against pg_dump's floor and bare pg_dump -Fd -j N.

    .venv/bin/python benchmarks/dirdump_bench.py [--scale 100] [--text-rows 1000000] [--level 6] [--rounds 3]
        [--sides floor,bare@2,ours@1,ours_disk@2,ours@2,ours@4] [--plateau-mb 100,1000] [--client-bin-dir DIR]

Builds the text/jsonb database of issue 13 (`pgbench -i -s N` plus a table of
text and jsonb rows, backup_bench.py's make_db) in a throwaway PostgreSQL 15
and starts a SeaweedFS, both from scripts/testbed.py. Then N rounds, each side
once per round, the order reversed every other round (benchlib.interleave).
A side is a name, ``@N`` its number of pg_dump jobs:

- floor:        `pg_dump -Fc -Z0 --no-sync -f /dev/null` (backup_bench's floor): one stream, nothing kept;
- bare@N:       `pg_dump -Fd -jN -Z L -f DIR` to a local directory, nothing else (bare@N:L: gzip level L;
                bare@N:zstdL: `--compress=zstd:L`, client tools 16 or newer; bare@N:none: no compression);
- ours@N:       pg_backup's whole job through the CLI (backup_bench's ``ours``): local copy, S3 upload,
                checksums, manifest. ours@1 is the default single stream (`pg_dump -Fc -Z0 | zstd`);
                N other than 1 a directory backup, `jobs: N`, `compression: gzip` at level L (or
                as bare's `:zstdL`, `:none`), each file hashed and uploaded as pg_dump writes it;
- ours_disk@N:  the same without S3;
- dirdump@N, dirdump_s3@N: only the engine's dirdump.run (no CLI, no manifest), to disk / disk + S3.

Measured per run: wall; CPU seconds of the Python process (RUSAGE_SELF), of
its children (pg_dump and its workers, zstd: RUSAGE_CHILDREN; for bare and
floor, os.wait4 on pg_dump), of the PostgreSQL backends (the postmaster's
reaped children's time in /proc/<postmaster>/stat: pg_dump's connections and
their COPY) and of SeaweedFS (/proc/<weed>/stat); peak RSS (VmHWM) of the
Python process and of every program of the tree. ``--client-bin-dir``: the
client tools of every side (pg_bin_dir for pg_backup; default: the server's
15), e.g. the PostgreSQL 17 tools of scripts/pg-client-newer.sh for zstd.
Then, for the memory curve,
one pg_backup run (jobs 2) on random text giving about --plateau-mb MB of
output. Prints issue 13's targets and a scaling table; writes
benchmarks/output/dirdump-<time>/results.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import textwrap
from typing import Any

import benchlib
from benchlib import MB, testbed
import backup_bench

TARGETS = {"single_vs_floor": 1.3, "jobs_vs_bare": 1.15, "python_peak_mb": 200}

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
                                 dirdump.compress_option(cfg["compression"], cfg["level"], client_major(pg_dump)))
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


@dataclasses.dataclass(frozen=True)
class Side:
    kind: str
    jobs: int
    compression: str  # of a directory dump: gzip, zstd, none
    level: int

    @property
    def compress(self) -> str:
        """pg_dump's option (``-Z L`` is gzip for every version; zstd needs 16 or newer)."""
        return {"gzip": f"-Z{self.level}", "zstd": f"--compress=zstd:{self.level}", "none": "-Z0"}[self.compression]

    @property
    def words(self) -> str:
        return "none" if self.compression == "none" else f"{self.compression} {self.level}"


def parse_side(side: str, level: int) -> Side:
    """``ours@2``: gzip at ``level``; ``bare@2:1``: gzip 1; ``ours@2:zstd3``: zstd 3; ``bare@2:none``; ``floor``."""
    kind, rest = side.partition("@")[::2]
    jobs, own = rest.partition(":")[::2]
    compression = "zstd" if own.startswith("zstd") else "none" if own == "none" else "gzip"
    own_level = own[4:] if compression == "zstd" else "0" if compression == "none" else own
    return Side(kind, int(jobs or 1), compression, int(own_level or level))


class Bench(backup_bench.Bench):
    """backup_bench's servers, database (make_db), floor, pg_backup run (ours) and memory curve (plateau)."""

    def __init__(self, args: argparse.Namespace) -> None:  # pylint: disable=super-init-not-called
        benchlib.Bench.__init__(self, args, "dirdump")  # pylint: disable=non-parent-init-called

    def ours_options(self, side: Side) -> dict[str, Any]:
        """pg_backup's options: the defaults for one stream, the side's compression for a directory backup."""
        tools = {"pg_bin_dir": self.args.client_bin_dir} if self.args.client_bin_dir else {}
        if side.jobs == 1:
            return {"jobs": 1, **tools}
        return {"jobs": side.jobs, "compression": side.compression, "level": side.level, **tools}

    def side(self, side: str, db: str, round_no: int) -> dict[str, Any]:
        spec = parse_side(side, self.args.level)
        if spec.kind == "floor":
            return self.floor(db, round_no)
        if spec.kind == "bare":
            return self.bare(db, round_no, spec)
        if spec.kind in ("ours", "ours_disk"):
            return self.ours(db, round_no, to_s3=spec.kind == "ours", **self.ours_options(spec))
        if spec.kind in ("dirdump", "dirdump_s3"):
            return self.dirdump(db, round_no, spec, to_s3=spec.kind == "dirdump_s3")
        raise ValueError(f"unknown side {side!r}")

    def bare(self, db: str, round_no: int, side: Side) -> dict[str, Any]:
        folder = os.path.join(self.out, f"bare-{round_no}.dir")
        run = self.timed([self.tool("pg_dump"), "-Fd", f"-j{side.jobs}", side.compress, "-f", folder, db], self.pg_env)
        size = dir_size(folder)
        shutil.rmtree(folder)
        return {"wall": run["wall"], "cpu": run["cpu"], "size": size, "peak_mb": max(run["peaks_kb"].values()) / 1024,
                "server_cpu": run["server_cpu"], "s3_cpu": run["s3_cpu"]}

    def dirdump(self, db: str, round_no: int, side: Side, to_s3: bool) -> dict[str, Any]:
        name = f"{'s3' if to_s3 else 'disk'}-{round_no}.dir"
        folder = os.path.join(self.out, name)
        key = f"dirdump/{name}"
        config = {"pg": {**self.pg.params(db), "pg_bin_dir": self.args.client_bin_dir}, "db": db, "dir": folder,
                  "jobs": side.jobs, "compression": side.compression, "level": side.level,
                  "workers": self.args.workers, "key": key,
                  "s3": {**self.s3.s3_option(self.bucket), "prefix": "dirdump"} if to_s3 else None}
        config_path = os.path.join(self.out, "ours.json")
        testbed._write_private(config_path, json.dumps(config))  # pylint: disable=protected-access
        stats_path = os.path.join(self.out, "ours-stats.json")
        env = benchlib.engine_env(self.out, BENCH_CONFIG=config_path, BENCH_STATS=stats_path)
        run = self.timed([sys.executable, "-c", OURS_RUNNER], env)
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
                "children_cpu": stats["children_cpu"], "server_cpu": run["server_cpu"], "s3_cpu": run["s3_cpu"],
                "files": stats["files"], "stored_before_exit": stats["stored_before_exit"],
                "pg_dump_exit_s": stats["exited_s"]}

    def run(self) -> None:
        try:
            facts = self.make_db(self.args.scale)
            facts.update(benchlib.interleave(tuple(self.args.sides), self.args.rounds,
                                             lambda side, round_no: self.side(side, facts["db"], round_no)))
            self.results["dirdump"] = facts
            self.pg.query(f'DROP DATABASE "{facts["db"]}"')
            for target in self.args.plateau_mb:
                self.results.setdefault("plateau", []).append(
                    self.plateau(target, tables=self.args.plateau_tables, to_s3=True,
                                 **self.ours_options(parse_side(f"ours@{self.args.plateau_jobs}", self.args.level))))
        finally:
            self.save()
        print(report(self.results))


LABELS = {"floor": "floor: `pg_dump -Fc -Z0 -f /dev/null` (one stream, nothing kept)",
          "bare": "bare: `pg_dump -Fd -j{jobs} {compress}` to a local directory",
          "ours": "pg_backup jobs {jobs}: disk + S3, checksums, manifest",
          "ours_disk": "pg_backup jobs {jobs}: disk only, checksums, manifest",
          "dirdump": "dirdump.run, jobs {jobs}: disk, hashed as written",
          "dirdump_s3": "dirdump.run, jobs {jobs}: disk + S3, hashed and uploaded as written"}


def label(side: str, level: int) -> str:
    spec = parse_side(side, level)
    text = LABELS[spec.kind].format(jobs=spec.jobs, compress=spec.compress)
    if spec.kind.startswith("ours"):
        text += " (one stream: `pg_dump -Fc -Z0 | zstd -3`)" if spec.jobs == 1 else f" (`pg_dump -Fd -j{spec.jobs}`, {spec.words})"
    return text


def cpu_split(got: dict[str, Any]) -> tuple[float, float, float, float]:
    """CPU seconds of the Python process, of pg_dump (its workers, zstd), of the server's backends, of SeaweedFS."""
    python = got.get("python_cpu", 0.0)
    return python, got.get("children_cpu", got["cpu"] - python), got.get("server_cpu", 0.0), got.get("s3_cpu", 0.0)


def verdicts(med: dict[str, Any], rounds: list[dict[str, Any]], level: int) -> list[str]:
    """Issue 13's targets, each with the median and the per-round ratio and met / MISSED."""
    def check(name: str, ratio: float, per_round: float, limit: float) -> str:
        return f"{name}: {ratio:.2f} (per round {per_round:.2f}) <= {limit}: {'met' if ratio <= limit else 'MISSED'}"
    out = []
    if "ours@1" in med and "floor" in med:
        out.append(check("single stream / floor", med["ours@1"]["wall"] / med["floor"]["wall"],
                         benchlib.round_ratio(rounds, "ours@1", "floor"), TARGETS["single_vs_floor"]))
    for side in med:
        spec = parse_side(side, level)
        bare = "bare@" + side.partition("@")[2]  # the same jobs and compression
        if spec.kind in ("ours", "ours_disk", "dirdump", "dirdump_s3") and spec.jobs > 1 and bare in med:
            out.append(check(f"{side} / {bare}", med[side]["wall"] / med[bare]["wall"],
                             benchlib.round_ratio(rounds, side, bare), TARGETS["jobs_vs_bare"]))
            if "floor" in med:
                ratio = med[side]["wall"] / med["floor"]["wall"]
                out.append(f"{side} / floor: {ratio:.2f} (per round {benchlib.round_ratio(rounds, side, 'floor'):.2f}) "
                           f"< 1: {'met' if ratio < 1 else 'MISSED'}")
    return out


def report(results: dict[str, Any]) -> str:
    facts, args = results.get("dirdump"), results["args"]
    if not facts:
        return "no complete run"
    med, rounds, level = facts["median"], facts["rounds"], args["level"]
    ref = "floor" if "floor" in med else next(iter(med))
    lines = [f"\npgbench -s {args['scale']} + {args['text_rows']:,} rows of text/jsonb ({facts['db_bytes'] / MB:.0f} MB "
             f"database), medians of {len(rounds)} interleaved rounds",
             f"| | wall s | x {ref} | x {ref}, per round | output MB | CPU s: Python | pg_dump (+ workers, zstd) | "
             "server backends | SeaweedFS | all | Python peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for side in med:
        got = med[side]
        split = cpu_split(got)
        peak = f"{got['python_peak_mb']:.0f}" if "python_peak_mb" in got else ""
        lines.append(f"| {label(side, level)} | {got['wall']:.1f} | {got['wall'] / med[ref]['wall']:.2f} | "
                     f"{benchlib.round_ratio(rounds, side, ref):.2f} | {got['size'] / MB:.1f} | "
                     + " | ".join(f"{x:.1f}" for x in split) + f" | {sum(split):.1f} | {peak} |")
    lines.append("\ntargets (issue 13):\n- " + "\n- ".join(verdicts(med, rounds, level)))
    scaling = sorted((s for s in med if s.startswith("ours@") and ":" not in s), key=lambda s: parse_side(s, level).jobs)
    if scaling:
        lines += ["\nscaling: pg_backup to disk + S3 by jobs (CPU seconds per process; cores busy = all CPU / wall)",
                  "| jobs | wall s | Python | pg_dump (+ workers, zstd) | server backends | SeaweedFS | all | cores busy |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for side in scaling:
            got, split = med[side], cpu_split(med[side])
            lines.append(f"| {parse_side(side, level).jobs} | {got['wall']:.1f} | " + " | ".join(f"{x:.1f}" for x in split)
                         + f" | {sum(split):.1f} | {sum(split) / got['wall']:.2f} |")
    rows = [(f"issue 13's database, {side}", facts["db_bytes"], med[side]) for side in scaling]
    rows += [(f"{p['db']} ({p['tables']} tables), jobs {p['jobs']}", p["db_bytes"], p["ours"]) for p in results.get("plateau", [])]
    if rows:
        lines += ["\npg_backup's Python process by output size (target: at most 200 MB, flat)",
                  "| database | DB MB | output MB | files | Python peak MB | largest child MB | wall s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, db_bytes, got in rows:
            over = " (over)" if got["python_peak_mb"] > TARGETS["python_peak_mb"] else ""
            lines.append(f"| {name} | {db_bytes / MB:.0f} | {got['size'] / MB:.1f} | {got.get('files', 1):.0f} | "
                         f"{got['python_peak_mb']:.0f}{over} | {got['child_peak_mb']:.0f} | {got['wall']:.1f} |")
    if "load_after" in results:
        lines.append(benchlib.load_line(results))
    return "\n".join(lines)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100: ~1.5 GB)")
    parser.add_argument("--text-rows", type=int, default=1_000_000, help="rows of the text/jsonb table")
    parser.add_argument("--level", type=int, default=6, help="gzip level (-Z) of every directory dump (pg_backup's default: 6)")
    parser.add_argument("--workers", type=int, default=2, help="dirdump sides: files hashed/uploaded at once")
    parser.add_argument("--sides", type=lambda v: [x for x in v.split(",") if x],
                        default=["floor", "bare@2", "ours@1", "ours_disk@2", "ours@2", "ours@4"],
                        help="what each round runs: floor, bare@N, ours@N, ours_disk@N, dirdump@N, dirdump_s3@N; "
                             "@N:L for gzip level L instead of --level (bare@2:1), @N:zstdL for zstd (16+), @N:none")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plateau-mb", type=lambda v: [int(x) for x in v.split(",") if x], default=[100, 1000],
                        help="then one pg_backup run on random text giving about these MB of output, for the memory "
                             "curve; '' to skip")
    parser.add_argument("--plateau-jobs", type=int, default=2, help="jobs of the memory-curve runs")
    parser.add_argument("--plateau-tables", type=int, default=4, help="tables the random text is split over")
    parser.add_argument("--client-bin-dir", help="client tools of every side (pg_bin_dir; default: the server's)")


if __name__ == "__main__":
    sys.exit(benchlib.main(__doc__, "dirdump", options, Bench, report))
