"""pg_backup against the seed's backup pipeline, side by side, interleaved.

    .venv/bin/python benchmarks/backup_bench.py [--scale 100] [--small-scale 20] [--rounds 3]

Builds pgbench databases (`pgbench -i -s N`; -s 100 is about 1.5 GB) in a
throwaway PostgreSQL 15 cluster and starts a SeaweedFS, both from
scripts/testbed.py, on 127.0.0.1. Then, for each scale, N rounds, alternating
which pipeline goes first:

- seed:  `pg_dump -Fc -Z9 -f FILE`, then `md5sum FILE`, then an upload of
         FILE to the same SeaweedFS with boto3 `upload_file` (default
         TransferConfig), each step a child process;
- ours:  `doctorq-backup backup` (the CLI: the same engine as pg_backup),
         local copy + S3 upload + sha256/md5 + manifest, in one child process.

Measured per run, from os.wait4 on each child (so pg_dump, zstd and md5sum,
which the child waits for, are included): wall seconds, CPU seconds
(user+sys), and peak RSS. For ours the child also reports its own
RUSAGE_SELF peak (the Python process) and RUSAGE_CHILDREN peak (the largest
of pg_dump, zstd, ...). The server's CPU (COPY out of the backends) and
SeaweedFS's are not counted for either side.

Prints one table per scale (medians) with ratios ours/seed and the targets
of issue 2; writes everything to benchmarks/output/<run>/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

import benchlib
from benchlib import MB, testbed

TARGETS = {"wall": 1 / 3, "size": 1.15, "peak_mb": 200}

# The child that runs our job: the CLI's main(), then its own peak RSS and its largest child's.
# VmHWM, not ru_maxrss: Linux charges a process's pre-exec image (here: a copy of the forking
# Python) to ru_maxrss, which would make every child look as big as its parent.
OURS_RUNNER = textwrap.dedent("""
    import json, os, re, resource, sys
    from ansible_collections.doctorq.backup.cli.backup import main
    rc = main(sys.argv[1:])
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/self/status") as status:
        hwm = int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1))
    with open(os.environ["BENCH_STATS"], "w") as out:
        json.dump({"rc": rc, "self_hwm_kb": hwm, "self_cpu": me.ru_utime + me.ru_stime,
                   "children_cpu": kids.ru_utime + kids.ru_stime}, out)
    sys.exit(rc)
""")

SEED_UPLOAD = textwrap.dedent("""
    import sys, boto3
    from botocore.config import Config
    endpoint, key_id, secret, bucket, path, key = sys.argv[1:]
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                      region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    s3.upload_file(path, bucket, key)
""")


def _tree_hwm(root: int, peaks: dict[int, tuple[str, int]]) -> None:
    """Record VmHWM (peak RSS since exec, kB) of root and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    members, changed = {root}, True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    for pid in members:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if "VmHWM" in fields:
            name, hwm = fields["Name"].strip(), int(fields["VmHWM"].split()[0])
            if hwm > peaks.get(pid, ("", 0))[1]:
                peaks[pid] = (name, hwm)


def run_child(argv: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run argv: wall time, CPU (incl. the children it waited for), peak RSS of each program of its tree."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout,  # pylint: disable=consider-using-with
                                stderr=errf)
        peaks: dict[int, tuple[str, int]] = {}
        while True:
            _tree_hwm(proc.pid, peaks)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errf.seek(0)
            raise RuntimeError(f"{argv[0]} {' '.join(argv[1:3])}... exited {proc.returncode}: "
                               f"{errf.read().decode()[-2000:]}")
    by_name: dict[str, int] = {}
    for name, hwm in peaks.values():
        by_name[name] = max(by_name.get(name, 0), hwm)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peaks_kb": by_name}


class Bench(benchlib.Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "run", scales={})

    # -- setup ---------------------------------------------------------------
    def make_db(self, scale: int) -> dict[str, Any]:
        db = f"pgbench_s{scale}" + (f"_text{self.args.text_rows}" if self.args.text_rows else "")
        self.pg.query(f'CREATE DATABASE "{db}"')
        started = time.monotonic()
        subprocess.run([os.path.join(self.pg.bin_dir, "pgbench"), "-i", "-q", "-s", str(scale), db],
                       env=self.pg_env, check=True, capture_output=True)
        if self.args.text_rows:  # the database of shared/PERFORMANCE.md: pgbench plus a table of jsonb and text
            self.pg.query(textwrap.dedent(f"""
                CREATE TABLE documents (id bigint PRIMARY KEY, title text, body text, attrs jsonb);
                INSERT INTO documents
                SELECT i, 'Document ' || i || ' ' || md5(i::text),
                       repeat(md5(random()::text) || ' ', 3) || 'status ' || (ARRAY['new', 'paid', 'shipped'])[1 + i % 3],
                       jsonb_build_object('customer', md5((i % 5000)::text), 'amount', round((random() * 1000)::numeric, 2),
                                          'tags', jsonb_build_array('t' || i % 7, 't' || i % 11), 'seq', i)
                FROM generate_series(1, {self.args.text_rows}) AS i;
            """), dbname=db)
            self.pg.query("VACUUM ANALYZE documents", dbname=db)
        built = time.monotonic() - started
        size = self.pg.query("SELECT pg_database_size(%s)", (db,))[0][0]
        self.warm(db)
        print(f"# {db}: {size / MB:.0f} MB, built in {built:.0f}s", flush=True)
        return {"db": db, "db_bytes": size, "build_s": built}

    def warm(self, db: str) -> None:
        """Read the database once (page cache), so that every pipeline finds it there."""
        subprocess.run([os.path.join(self.pg.bin_dir, "pg_dump"), "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", db],
                       env=self.pg_env, check=True)

    # -- the two pipelines -----------------------------------------------------
    def seed(self, db: str, round_no: int) -> dict[str, Any]:
        folder = os.path.join(self.out, "seed")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{db}_full_{round_no}.dump")
        steps = {}
        steps["pg_dump"] = run_child([os.path.join(self.pg.bin_dir, "pg_dump"), "-Fc", "-Z9", "-f", path, db],
                                     self.pg_env)
        with open(path + ".md5", "w", encoding="utf-8") as md5:
            steps["md5sum"] = run_child(["md5sum", path], self.pg_env, stdout=md5)
        key = f"seed/{db}/{os.path.basename(path)}"
        steps["upload"] = run_child([sys.executable, "-c", SEED_UPLOAD, self.s3.endpoint_url, self.s3.access_key,
                                     self.s3.secret_key, self.bucket, path, key], os.environ.copy())
        size = os.path.getsize(path)
        assert self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"] == size
        for name in (path, path + ".md5"):
            os.unlink(name)
        self.client.delete_object(Bucket=self.bucket, Key=key)
        peaks = {name: kb for step in steps.values() for name, kb in step["peaks_kb"].items()}
        return {"wall": sum(s["wall"] for s in steps.values()), "cpu": sum(s["cpu"] for s in steps.values()),
                "size": size, "peak_mb": max(peaks.values()) / 1024, "pg_dump_peak_mb": peaks.get("pg_dump", 0) / 1024,
                "upload_peak_mb": steps["upload"]["peaks_kb"].get("python", 0) / 1024, "steps": steps}

    def floor(self, db: str, round_no: int) -> dict[str, Any]:  # pylint: disable=unused-argument
        """pg_dump's own floor: the server's COPY and pg_dump, no compression, nothing kept."""
        run = self.timed([self.tool("pg_dump"), "-Fc", "-Z0", "--no-sync", "-f", "/dev/null", db], self.pg_env)
        return {"wall": run["wall"], "cpu": run["cpu"], "size": 0, "peak_mb": max(run["peaks_kb"].values()) / 1024,
                "server_cpu": run["server_cpu"], "s3_cpu": run["s3_cpu"]}

    def timed(self, argv: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
        """run_child, plus the CPU seconds the run cost the PostgreSQL backends and SeaweedFS (``server_cpu``)."""
        before = self.server_cpu()
        run = run_child(argv, env, stdout)
        time.sleep(0.3)  # the postmaster reaps the run's backends
        after = self.server_cpu()
        return {**run, **{name: after[name] - before[name] for name in after}}

    def ours(self, db: str, round_no: int, level: int | None = None, jobs: int = 1, compression: str | None = None,
             to_s3: bool = True, pg_bin_dir: str | None = None) -> dict[str, Any]:
        """pg_backup's job through the CLI; ``jobs`` other than 1 is a directory backup (``compression`` gzip on PG 15)."""
        folder = os.path.join(self.out, f"ours-{round_no}")
        config = {**self.pg.params(db), "backup_dir": folder, "databases": [db], "weekly": "never", "prune": False,
                  "jobs": jobs, **({"s3": {**self.s3.s3_option(self.bucket), "prefix": "ours"}} if to_s3 else {})}
        if level is not None:
            config["compression_level"] = level
        if compression:
            config["compression"] = compression
        if pg_bin_dir:
            config["pg_bin_dir"] = pg_bin_dir
        del config["db"]
        config_path = os.path.join(self.out, "ours.json")
        testbed._write_private(config_path, json.dumps(config))  # pylint: disable=protected-access
        stats_path = os.path.join(self.out, "ours-stats.json")
        env = benchlib.engine_env(self.out, BENCH_STATS=stats_path)
        with open(os.path.join(self.out, f"ours-{db}-{round_no}.log"), "w", encoding="utf-8") as log:
            run = self.timed([sys.executable, "-c", OURS_RUNNER, "backup", "--config", config_path], env, stdout=log)
        with open(stats_path, encoding="utf-8") as handle:
            stats = json.load(handle)
        manifests = [n for n in os.listdir(folder) if n.endswith(".manifest.json")]
        with open(os.path.join(folder, manifests[0]), encoding="utf-8") as handle:
            manifest = json.load(handle)
        objects = [obj for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="ours/")
                   for obj in page.get("Contents", [])]
        if to_s3:  # every file of the backup, and its manifest, is in the bucket
            stored = {obj["Key"]: obj["Size"] for obj in objects}
            for item in manifest.get("files") or [{"name": "", "size": manifest["size"]}]:
                key = f"{manifest['s3']['key']}/{item['name']}" if item["name"] else manifest["s3"]["key"]
                assert stored.get(key) == item["size"], (key, stored.get(key), item)
        shutil.rmtree(folder)
        for obj in objects:
            self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
        children = {name: kb for name, kb in run["peaks_kb"].items() if name != "python"}
        python = max(stats["self_hwm_kb"], run["peaks_kb"].get("python", 0))
        return {"wall": run["wall"], "cpu": run["cpu"], "size": manifest["size"],
                "peak_mb": max([python, *children.values()]) / 1024, "python_peak_mb": python / 1024,
                "child_peak_mb": max(children.values(), default=0) / 1024,
                "pg_dump_peak_mb": children.get("pg_dump", 0) / 1024, "zstd_peak_mb": children.get("zstd", 0) / 1024,
                "python_cpu": stats["self_cpu"], "children_cpu": stats["children_cpu"], "server_cpu": run["server_cpu"],
                "s3_cpu": run["s3_cpu"], "files": len(manifest.get("files") or [manifest])}

    # -- the run -----------------------------------------------------------------
    def scale(self, scale: int) -> dict[str, Any]:
        facts = self.make_db(scale)

        def measure(which: str, round_no: int) -> dict[str, Any]:
            if which.startswith("ours_z"):
                return self.ours(facts["db"], round_no, level=int(which[len("ours_z"):]))
            return getattr(self, which)(facts["db"], round_no)

        sides = ("seed", "ours", *[f"ours_z{level}" for level in self.args.ours_levels], "floor")
        facts.update(benchlib.interleave(sides, self.args.rounds, measure, label=f"s{scale} "))
        self.pg.query(f'DROP DATABASE "{facts["db"]}"')
        return facts

    def plateau(self, target_mb: int, tables: int = 1, **ours: Any) -> dict[str, Any]:
        """Ours on random text whose zstd (or gzip) output is ~target_mb: many S3 parts; Python's peak must stay flat.

        ``tables``: split the rows over that many tables (a directory backup dumps one file per table);
        ``ours``: the options of :meth:`ours` (``jobs``, ``compression``, ...).
        """
        db = f"randtext_{target_mb}"
        self.pg.query(f'CREATE DATABASE "{db}"')
        per_row = 89 if ours.get("compression") == "gzip" else 72  # bytes of zstd -3 / gzip -6 output per row
        copies = max(1, round(target_mb * MB / (40000 * per_row * tables)))
        started = time.monotonic()
        for table in [f"blobs_{n}" for n in range(1, tables + 1)] if tables > 1 else ["blobs"]:
            self.pg.query(textwrap.dedent(f"""
                CREATE TABLE {table} (id integer, body text);
                INSERT INTO {table} SELECT i, md5(i::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
                FROM generate_series(1, 40000) AS i;
                INSERT INTO {table} SELECT b.id + k * 40000, b.body FROM generate_series(1, {copies - 1}) AS k
                CROSS JOIN LATERAL (SELECT * FROM {table} WHERE id <= 40000 ORDER BY id) AS b;
            """), dbname=db)
        size = self.pg.query("SELECT pg_database_size(%s)", (db,))[0][0]
        print(f"# {db}: {size / MB:.0f} MB in {tables} table(s), built in {time.monotonic() - started:.0f}s", flush=True)
        self.warm(db)
        got = self.ours(db, 1, **ours)
        print(f"  {db} ours: wall {got['wall']:6.1f}s  size {got['size'] / MB:7.1f} MB  "
              f"Python peak {got['python_peak_mb']:5.0f} MB  largest child {got['child_peak_mb']:5.0f} MB", flush=True)
        self.pg.query(f'DROP DATABASE "{db}"')
        return {"db": db, "db_bytes": size, "tables": tables, **ours, "ours": got}

    def run(self) -> None:
        scales = [s for s in (self.args.small_scale, self.args.scale) if s]
        try:
            for scale in scales:
                self.results["scales"][str(scale)] = self.scale(scale)
            for target in self.args.plateau_mb:
                self.results.setdefault("plateau", []).append(self.plateau(target))
        finally:
            self.save()
        print(report(self.results))


def report(results: dict[str, Any]) -> str:
    lines = []
    for scale, facts in results["scales"].items():
        seed, ours = facts["median"]["seed"], facts["median"]["ours"]
        n = len(facts["rounds"])
        extra = f" + {results['args'].get('text_rows'):,} rows of text/jsonb" if results["args"].get("text_rows") else ""
        lines.append(f"\npgbench -s {scale}{extra} ({facts['db_bytes'] / MB:.0f} MB database), "
                     f"medians of {n} interleaved rounds")
        lines.append("| | wall s | CPU s | output MB | peak RSS MB |")
        lines.append("|---|---:|---:|---:|---:|")
        lines.append(f"| seed: pg_dump -Fc -Z9, md5sum, upload_file | {seed['wall']:.1f} | {seed['cpu']:.1f} | "
                     f"{seed['size'] / MB:.1f} | pg_dump {seed['pg_dump_peak_mb']:.0f}, uploader (Python) "
                     f"{seed['upload_peak_mb']:.0f} |")
        lines.append(f"| pg_backup (CLI): dump, zstd, sha256+md5, disk + S3 | {ours['wall']:.1f} | {ours['cpu']:.1f} | "
                     f"{ours['size'] / MB:.1f} | Python {ours['python_peak_mb']:.0f}, largest child "
                     f"{ours['child_peak_mb']:.0f} (pg_dump {ours['pg_dump_peak_mb']:.0f}, zstd {ours['zstd_peak_mb']:.0f}) |")
        wall, cpu, size = ours["wall"] / seed["wall"], ours["cpu"] / seed["cpu"], ours["size"] / seed["size"]
        lines.append(f"| ratio ours/seed | {wall:.2f} | {cpu:.2f} | {size:.2f} | |")
        for side in sorted(k for k in facts["median"] if k.startswith("ours_z")):
            variant = facts["median"][side]
            lines.append(f"| pg_backup with compression_level {side[len('ours_z'):]} | {variant['wall']:.1f} | "
                         f"{variant['cpu']:.1f} | {variant['size'] / MB:.1f} | Python {variant['python_peak_mb']:.0f} |")
            lines.append(f"| ratio to seed | {variant['wall'] / seed['wall']:.2f} | {variant['cpu'] / seed['cpu']:.2f} | "
                         f"{variant['size'] / seed['size']:.2f} | |")
        if "floor" in facts["median"]:
            floor = facts["median"]["floor"]
            lines.append(f"| (pg_dump floor: -Fc -Z0 to /dev/null) | {floor['wall']:.1f} | {floor['cpu']:.1f} | | |")
            lines.append(f"| ratio floor/seed (best any pipeline of one pg_dump can do) | {floor['wall'] / seed['wall']:.2f} "
                         f"| | | |")
        verdict = [f"wall {wall:.2f} {'<=' if wall <= TARGETS['wall'] else '>'} 0.33",
                   f"size {size:.2f} {'<=' if size <= TARGETS['size'] else '>'} 1.15",
                   f"peak {max(ours['python_peak_mb'], ours['child_peak_mb']):.0f} MB "
                   f"{'<' if max(ours['python_peak_mb'], ours['child_peak_mb']) < TARGETS['peak_mb'] else '>='} 200 MB"]
        lines.append("targets: " + ", ".join(verdict))
    if "load_after" in results:
        lines.append("\n" + benchlib.load_line(results))
    rows = [(f"pgbench -s {s}", f["db_bytes"], f["median"]["ours"]) for s, f in results["scales"].items()]
    rows += [(p["db"], p["db_bytes"], p["ours"]) for p in results.get("plateau", [])]
    if rows:
        lines.append("\npg_backup's memory by output size (S3 part size 16 MiB)")
        lines.append("| database | DB MB | output MB | S3 parts | Python peak MB | largest child MB |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, db_bytes, got in rows:
            parts = -(-int(got["size"]) // (16 * 1024 * 1024)) if got["size"] > 16 * 1024 * 1024 else 1
            lines.append(f"| {name} | {db_bytes / MB:.0f} | {got['size'] / MB:.1f} | {parts} | {got['python_peak_mb']:.0f} "
                         f"| {got['child_peak_mb']:.0f} |")
    return "\n".join(lines)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale of the main comparison (100: ~1.5 GB)")
    parser.add_argument("--small-scale", type=int, default=20, help="a smaller scale, to show memory does not grow (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text-rows", type=int, default=0,
                        help="add a table of N rows of text and jsonb to each pgbench database (shared/PERFORMANCE.md "
                             "used pgbench -s 100 plus 1,000,000 such rows): harder to compress than pgbench's rows")
    parser.add_argument("--ours-levels", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                        help="also run pg_backup with these zstd levels in every round (e.g. 1), interleaved")
    parser.add_argument("--plateau-mb", type=lambda v: [int(x) for x in v.split(",") if x], default=[100, 300],
                        help="also run ours on random text giving about these MB of output (many S3 parts), "
                             "to show the Python process's memory stays flat; '' to skip")


if __name__ == "__main__":
    sys.exit(benchlib.main(__doc__, "run", options, Bench, report))
