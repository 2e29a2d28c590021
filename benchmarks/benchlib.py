"""What backup_bench.py and restore_bench.py share: the servers, results.json, the command line.

Both run on demand against a throwaway PostgreSQL 15 and SeaweedFS from
scripts/testbed.py, write every number to ``<output>/results.json`` whatever
happens, and can print the tables of an earlier run again (``--report``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import testbed  # noqa: E402  pylint: disable=wrong-import-position

MB = 1_000_000
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + sys) of a live process, and of the children it has reaped, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
    return utime + stime, cutime + cstime


def collections_dir() -> str:
    """The folder that holds ansible_collections/doctorq/backup (this checkout): for PYTHONPATH."""
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "collection-path.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


def engine_env(out: str, **extra: str) -> dict[str, str]:
    """The environment of a timed run of the engine (this checkout on PYTHONPATH), its bytecode cached under ``out``.

    A host's cron runs find the engine compiled in ``__pycache__`` after the first run; this sandbox sets
    PYTHONDONTWRITEBYTECODE, which would make every timed run compile the engine again (about 0.1 s). The cache
    is filled once here, before the first timed run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=collections_dir(), PYTHONPYCACHEPREFIX=os.path.join(out, "pycache"), **extra)
    if not os.path.isdir(env["PYTHONPYCACHEPREFIX"]):
        subprocess.run([sys.executable, "-c", "import ansible_collections.doctorq.backup.cli.backup"], env=env, check=True)
    return env


class Bench:
    """One run: its output folder, the servers (with a bucket ``bench``), the libpq environment, the results."""

    def __init__(self, args: argparse.Namespace, name: str, **results: Any) -> None:
        """``name``: the default output folder is ``benchmarks/output/<name>-<time>``; ``results``: more keys to start with."""
        self.args = args
        stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        self.out = os.path.abspath(args.output or os.path.join(HERE, "output", f"{name}-{stamp}"))
        os.makedirs(self.out, exist_ok=True)
        self.bed = testbed.Testbed(tempfile.mkdtemp(prefix="doctorq-bench-"))
        self.pg = self.bed.postgres()
        self.s3 = self.bed.seaweed()
        self.client = self.s3.client()
        self.bucket = "bench"
        self.client.create_bucket(Bucket=self.bucket)
        self.pg_env = {**os.environ, **self.pg.libpq_env(), "LC_ALL": "C"}
        self.pg_env.pop("PGDATABASE", None)
        self.client_bin_dir = getattr(args, "client_bin_dir", None) or self.pg.bin_dir  # the tools the sides run
        with open(os.path.join(self.bed._pg.data_dir, "postmaster.pid"), encoding="ascii") as handle:  # pylint: disable=protected-access
            self.postmaster = int(handle.readline())
        self.results: dict[str, Any] = {"started": stamp, "args": vars(args), "host": os.uname().nodename,
                                        "client": subprocess.run([self.tool("pg_dump"), "--version"], check=True,
                                                                 capture_output=True, text=True).stdout.strip(),
                                        "cpus": os.cpu_count(), "load_before": os.getloadavg(),
                                        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
                                        **results}

    def server_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the PostgreSQL backends that have exited (the postmaster reaps them, so they
        count in its children's time: pg_dump's connections, with their COPY) and of SeaweedFS (one process)."""
        return {"server_cpu": proc_cpu(self.postmaster)[1],
                "s3_cpu": sum(proc_cpu(self.bed._seaweed.pid))}  # pylint: disable=protected-access

    def tool(self, name: str) -> str:
        """A client program of the sides (``--client-bin-dir``, else the server's)."""
        return os.path.join(self.client_bin_dir, name)

    def save(self) -> None:
        """Write results.json (also after a failure: what was measured is kept), then stop the servers unless --keep-bed."""
        self.results["finished"] = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        self.results["load_after"] = os.getloadavg()
        with open(os.path.join(self.out, "results.json"), "w", encoding="utf-8") as handle:
            json.dump(self.results, handle, indent=2, default=str)
        if not self.args.keep_bed:
            self.bed.down()


def interleave(sides: tuple[str, ...], rounds: int, measure: Callable[[str, int], dict[str, Any]],
               label: str = "") -> dict[str, Any]:
    """``rounds`` rounds of every side, the order reversed every other round; each round printed, medians kept.

    ``measure(side, round_no)`` returns the side's figures (``wall``, ``cpu``, ``size``, ``peak_mb``, more
    numbers as it likes). Returns ``{"rounds": [...], "median": {side: {figure: median}}}``.
    """
    done = []
    for round_no in range(1, rounds + 1):
        order = sides if round_no % 2 else tuple(reversed(sides))
        entry: dict[str, Any] = {"round": round_no, "order": order}
        for side in order:
            got = entry[side] = measure(side, round_no)
            print(f"  {label}round {round_no} {side:7}: wall {got['wall']:6.2f}s  cpu {got['cpu']:6.2f}s  "
                  f"size {got['size'] / MB:7.1f} MB  peak {got['peak_mb']:5.0f} MB", flush=True)
        done.append(entry)
    return {"rounds": done, "median": {side: {k: statistics.median(r[side][k] for r in done)
                                              for k in done[0][side] if isinstance(done[0][side][k], (int, float))}
                                       for side in sides}}


def round_ratio(rounds: list[dict[str, Any]], side: str, ref: str, figure: str = "wall") -> float:
    """The median over the rounds of side/ref within each round: cancels the load drifting between rounds."""
    return statistics.median(r[side][figure] / r[ref][figure] for r in rounds)


def load_line(results: dict[str, Any]) -> str:
    """The machine's load before and after the run: on a shared machine the seconds mean little without it."""
    def triple(load: Any) -> str:
        return "/".join(f"{x:.1f}" for x in load)
    return (f"load average (1/5/15 min) before {triple(results['load_before'])}, "
            f"after {triple(results.get('load_after', (0, 0, 0)))} on {results['cpus']} CPUs")


def main(doc: str, name: str, options: Callable[[argparse.ArgumentParser], None],
         bench: Callable[[argparse.Namespace], Any], report: Callable[[dict[str, Any]], str]) -> int:
    """The command line: the benchmark's own ``options``, then --output, --keep-bed and --report."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", 1)[0])
    options(parser)
    parser.add_argument("--output", help=f"folder for results.json and the run's files (default benchmarks/output/{name}-<time>)")
    parser.add_argument("--keep-bed", action="store_true", help="leave PostgreSQL and SeaweedFS running")
    parser.add_argument("--report", metavar="RESULTS_JSON", help="only print the tables of an earlier run")
    args = parser.parse_args()
    if args.report:
        with open(args.report, encoding="utf-8") as handle:
            print(report(json.load(handle)))
        return 0
    bench(args).run()
    return 0
