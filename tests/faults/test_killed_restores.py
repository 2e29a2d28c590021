# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 6: ``kill -9`` of a restore at a known phase, then the next run.

The restore runs as its own process (``run_restore`` with its log on stdout),
with a ``zstd`` first on its PATH that passes the first half of a backup to
``pg_restore`` and then holds: the run stops mid-restore, with pg_restore
alive and waiting for the rest, at a point the test knows. Then the run is
killed with SIGKILL, as the OOM killer or an operator would.

Promises checked:
- nothing the run started (pg_restore above all) outlives it;
- swap mode: the next restore of that database drops the full-size
  ``<db>__restoring_<ts>`` the dead run left, and says so; a
  ``<db>__pre_restore_<ts>`` (the user's previous data) is never touched;
  the ``__restoring_`` database of a run that is alive is never touched;
- replace mode: the run wrote its intent before the drop; a backup of that
  database refuses with the exact command that finishes the fall-back; the
  next restore brings the database back from the safety backup, exactly as
  it was before the interrupted restore.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from typing import Any, Callable, Iterator

import pytest

from backup_support import CliProcesses, cli_env, next_second, wait_for, write_private
# backup_dir and dbs are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, backup, backup_dir, dbs, failed, modify, ok, restore_args, zstd,
)

from ansible_collections.doctorq.backup.plugins.module_utils import restore_intent
from ansible_collections.doctorq.backup.plugins.module_utils.drill import DrillJob, run_drill

pytestmark = pytest.mark.faults

RUNNER = textwrap.dedent("""
    import json, sys
    from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, run_restore
    with open(sys.argv[1], encoding="utf-8") as handle:
        params = json.load(handle)
    result = run_restore(RestoreJob.from_params(params), echo=sys.stdout)
    print(json.dumps({"failed": result.get("failed"), "msg": result.get("msg")}), flush=True)
""")

DRILL_RUNNER = textwrap.dedent("""
    import json, sys
    from ansible_collections.doctorq.backup.plugins.module_utils.drill import DrillJob, run_drill
    with open(sys.argv[1], encoding="utf-8") as handle:
        params = json.load(handle)
    report = run_drill(DrillJob.from_params(params), echo=sys.stdout)
    print(json.dumps({"status": report["status"], "error": report["error"]}), flush=True)
""")

HELD_ZSTD = """#!/bin/sh
# zstd for a restore the test kills: compression is the real zstd; decompression passes the
# first {size} bytes, then holds (at most 60 s) until the test releases it.
case " $* " in *" -d "*) ;; *) exec {real} "$@";; esac
{real} "$@" | head -c {size}
touch {state}/held
i=0
while [ ! -e {state}/release ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
exit 1
"""


def alive(pid: int) -> bool:
    """Running: a killed child nobody reaped yet (PID 1 here does not reap) shows as a zombie, and is dead."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def pg_restores(token: str) -> list[int]:
    """Live pg_restore processes working on a database of this test."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"pg_restore" and any(token.encode() in a for a in argv) \
                and alive(int(entry)):
            found.append(int(entry))
    return found


class HeldRestore:
    """A restore run in its own process whose decompressor stops halfway (see the module's docstring)."""

    def __init__(self, tmp_dir: str, backup_path: str, params: dict[str, Any], runner: str = RUNNER) -> None:
        self.tmp_dir, self.runner = tmp_dir, runner
        root = os.path.join(tmp_dir, "held")
        self.bin, self.state = os.path.join(root, "bin"), os.path.join(root, "state")
        os.makedirs(self.bin)
        os.makedirs(self.state)
        with open(backup_path, "rb") as handle:
            size = len(zstd(handle.read(), decompress=True)) // 2
        script = os.path.join(self.bin, "zstd")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(HELD_ZSTD.format(real=shutil.which("zstd"), size=size, state=self.state))
        os.chmod(script, 0o755)
        self.params = write_private(os.path.join(tmp_dir, "restore.json"), json.dumps(params))
        self.procs = CliProcesses(tmp_dir)
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        env = {**cli_env(), "PATH": self.bin + os.pathsep + os.environ["PATH"]}
        out = open(os.path.join(self.tmp_dir, "restore.out"), "w+", encoding="utf-8")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen([sys.executable, "-c", self.runner, self.params], env=env, cwd="/",  # pylint: disable=consider-using-with
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.proc.out_file, self.proc.err_file = out, out  # type: ignore[attr-defined]
        self.procs.procs.append(self.proc)
        return self.proc

    def output(self) -> str:
        return CliProcesses.output(self.proc)[0]

    def wait_held(self, line: str) -> None:
        """Until pg_restore has half the backup and waits for more, and the run's log has ``line``."""
        wait_for(lambda: os.path.exists(os.path.join(self.state, "held")) or self.proc.poll() is not None,
                 timeout=60, what="the decompressor to hold")
        assert self.proc.poll() is None, self.output()
        wait_for(lambda: line in self.output(), timeout=10, what=line)

    def kill_9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def close(self) -> None:
        with open(os.path.join(self.state, "release"), "w", encoding="utf-8"):
            pass
        self.procs.close()


@pytest.fixture
def held(tmp_path) -> Iterator[Any]:
    made: list[HeldRestore] = []

    def start(backup_path: str, params: dict[str, Any], runner: str = RUNNER) -> HeldRestore:
        run = HeldRestore(str(tmp_path / f"run{len(made)}"), backup_path, params, runner)
        made.append(run)
        run.start()
        return run

    yield start
    for run in made:
        run.close()


def killed_at_pg_restore(held, token: str, backup_path: str, params: dict[str, Any], line: str,
                         runner: str = RUNNER, ready: Callable[[], bool] | None = None) -> None:
    """Start a restore, stop it mid-restore (``line`` logged, pg_restore alive), kill -9 it; nothing may outlive it.

    ``ready``: what must be true before the kill (the half of the backup the decompressor passes may still sit
    in the pipe, unread by pg_restore, when it holds).
    """
    run = held(backup_path, params, runner)
    run.wait_held(line)
    assert pg_restores(token), "pg_restore should be running, waiting for the rest of the backup"
    if ready is not None:
        wait_for(ready, timeout=30, what="pg_restore to restore part of the backup")
    run.kill_9()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not pg_restores(token), timeout=10, what="pg_restore to die with the run")
    assert not pg_restores(token), "pg_restore outlived the killed restore"


def intents(directory: str) -> list[str]:
    return glob.glob(os.path.join(directory, ".restore_intent_*.json"))


def test_kill_9_of_a_swap_restore_leaves_no_process_and_the_next_restore_drops_its_leftover(
        run_module, pg_server, table_digest, dbs, backup_dir, held):
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    previous_data = dbs.empty(f"{db}__pre_restore_20200101_000000")  # an earlier restore's: the user's, kept

    def restoring_tables() -> int:
        names = [n for n in dbs.mine() if "__restoring_" in n]
        if not names:
            return 0
        return pg_server.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", dbname=names[0])[0][0]

    killed_at_pg_restore(held, dbs.token, made["path"], restore_args(pg_server, db, backup_dir, confirm=db),
                         "Restoring into a new database", ready=lambda: restoring_tables() > 0)

    (leftover,) = [n for n in dbs.mine() if "__restoring_" in n]
    assert restoring_tables() > 0
    plan = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db), check_mode=True))["plan"]
    assert plan["drop_leftovers"] == [leftover] and leftover in dbs.mine()
    next_second()  # the safety backup is named by the second, like the one of the killed run

    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db)))

    assert result["leftovers_removed"] == [leftover]
    assert any(f"Dropped {leftover!r}" in line and "interrupted restore" in line for line in result["log"]), result["log"]
    assert table_digest(pg_server, db) == original
    assert dbs.mine() == sorted([db, previous_data, result["previous_database"]])


def test_the_database_of_a_live_restore_is_never_taken_for_a_leftover(run_module, pg_server, dbs, backup_dir, held,
                                                                      tmp_path):
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir)
    run = held(made["path"], restore_args(pg_server, db, backup_dir, confirm=db))
    run.wait_held("Restoring into a new database")
    (restoring,) = [n for n in dbs.mine() if "__restoring_" in n]

    # a second restore of the same database from another backup directory (another lock file)
    other = str(tmp_path / "elsewhere")
    result = run_module(MODULE, restore_args(pg_server, db, other, confirm=db, source=made["path"]))

    msg = failed(result)
    assert "another restore" in msg and repr(db) in msg, msg
    assert restoring in dbs.mine() and run.proc.poll() is None
    assert "leftovers_removed" not in result or result["leftovers_removed"] == []


def test_kill_9_of_a_replace_restore_after_the_drop_is_finished_from_the_safety_backup(
        run_module, pg_server, table_digest, dbs, backup_dir, held):
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    before = table_digest(pg_server, db)

    killed_at_pg_restore(held, dbs.token, made["path"],
                         restore_args(pg_server, db, backup_dir, confirm=db, mode="replace"),
                         f"Dropping the existing database {db!r}")

    (intent_file,) = intents(backup_dir)
    assert stat.S_IMODE(os.stat(intent_file).st_mode) == 0o600
    with open(intent_file, encoding="utf-8") as handle:
        intent = json.load(handle)
    safety = intent["safety_backup"]
    assert intent["database"] == db and os.path.isfile(safety) and os.path.isfile(safety + ".manifest.json")
    assert table_digest(pg_server, db) != before  # what the kill left under the live name: half a restore

    # a backup now would record half a restore as the newest backup: it refuses, with the command to run
    manifests = glob.glob(os.path.join(backup_dir, "*.manifest.json"))
    msg = failed(run_module("pg_backup", {**pg_server.params(db), "backup_dir": backup_dir, "weekly": "never"}))
    assert "interrupted" in msg and safety in msg and "playbooks/restore.yml" in msg and "restore_source" in msg, msg
    assert glob.glob(os.path.join(backup_dir, "*.manifest.json")) == manifests
    plan = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, source=safety), check_mode=True))
    assert plan["plan"]["finish_interrupted"]["safety_backup"] == safety and intents(backup_dir) == [intent_file]

    # the command it gives: a restore of the safety backup, which finishes the fall-back and stops there
    result = ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, source=safety)))

    assert table_digest(pg_server, db) == before
    assert intents(backup_dir) == []
    assert result["interrupted_restore"]["safety_backup"] == safety
    kept = result["interrupted_restore"]["set_aside"]
    assert kept.startswith(f"{db}__interrupted_") and dbs.mine() == sorted([db, kept])
    assert any("interrupted" in line and safety in line for line in result["log"]), result["log"]
    ok(run_module("pg_backup", {**pg_server.params(db), "backup_dir": backup_dir, "weekly": "never"}))


def test_the_next_replace_restore_finishes_the_fall_back_then_does_its_own_work(
        run_module, pg_server, table_digest, dbs, backup_dir, held):
    db = dbs.sample()
    original = table_digest(pg_server, db)
    made = backup(run_module, pg_server, db, backup_dir)
    modify(pg_server, db)
    args = restore_args(pg_server, db, backup_dir, confirm=db, mode="replace")
    killed_at_pg_restore(held, dbs.token, made["path"], args, f"Dropping the existing database {db!r}")
    (intent_file,) = intents(backup_dir)
    with open(intent_file, encoding="utf-8") as handle:
        safety = json.load(handle)["safety_backup"]
    next_second()  # the safety backup is named by the second, like the one of the killed run

    result = ok(run_module(MODULE, args))  # the operator runs the same restore again

    assert result["interrupted_restore"]["safety_backup"] == safety
    assert table_digest(pg_server, db) == original
    assert intents(backup_dir) == []
    log = "\n".join(result["log"])
    assert log.index("interrupted") < log.index("Creating a safety backup") < log.index("RESTORE COMPLETED")


@pytest.mark.parametrize("mode", ["swap", "replace"])
def test_a_database_a_killed_restore_left_closed_to_connections_is_opened_again(run_module, pg_server, dbs, backup_dir,
                                                                                mode):
    """Killed between closing the live database and the rename (swap) or the drop (replace).

    That window is milliseconds long and no program of ours runs in it, so the
    state a kill leaves there is made by hand: the intent as the run writes it,
    the database closed to connections. The next run, even one refused for its
    confirmation, opens the database again and says so.
    """
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir)
    pg_server.query(f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS false')
    restore_intent.write(backup_dir, db, {"mode": mode, "phase": "closing", "started_at": "2026-01-01T00:00:00Z",
                                          "safety_backup": made["path"] if mode == "replace" else None,
                                          "previous": f"{db}__pre_restore_20260101_000000" if mode == "swap" else None})

    result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm="not-it"))

    assert "was put right first" in failed(result)
    assert result["interrupted_restore"]["reopened"] == [db]
    pg_server.connect(db).close()
    assert intents(backup_dir) == [] and dbs.mine() == [db]
    assert any("connections allowed again" in line for line in result["log"]), result["log"]


def test_kill_9_of_a_drill_leaves_no_process_and_the_next_drill_drops_its_scratch_databases(
        run_module, pg_server, dbs, backup_dir, held):
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir)
    params = {**pg_server.params(db), "backup_dir": backup_dir}
    killed_at_pg_restore(held, dbs.token, made["path"], params, "Restoring into a new database", runner=DRILL_RUNNER)
    left = [n for n in dbs.mine() if "__drill_" in n]
    assert left, "the killed drill left its scratch database"
    next_second()

    report = run_drill(DrillJob.from_params(params))

    assert report["status"] == "success", report["error"]
    assert sorted(report["leftovers_removed"]) == sorted(left)
    assert [w for w in report["warnings"] if "interrupted drill" in w and left[0] in w], report["warnings"]
    assert dbs.mine() == [db]
