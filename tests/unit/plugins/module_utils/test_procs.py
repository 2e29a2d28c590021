"""The one process runner (procs.py): exit status of every stage, deadlines, death with the run, another OS user."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import procs


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper is dead)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_every_stage_of_a_pipe_is_checked_and_its_stderr_reported():
    # the first stage fails, the last succeeds: a shell pipe would report success
    with procs.Pipe([["sh", "-c", "echo broken >&2; exit 3"], ["cat"]]) as pipe:
        assert pipe.stdout.read() == b""
        with pytest.raises(procs.ProcessFailed, match=r"^sh exited with status 3: broken$") as info:
            pipe.wait()
    assert info.value.status == 3


def test_run_captures_output_in_the_c_locale_and_returns_status_when_not_checked():
    done = procs.run(["sh", "-c", 'echo "$LC_ALL $LANG"; echo err >&2; exit 2'], env={"LC_ALL": "pt_BR.UTF-8"},
                     check=False)
    assert (done.status, done.stdout.strip(), done.stderr.strip()) == (2, "C C", "err")
    with pytest.raises(procs.ProcessFailed, match="status 2"):
        procs.run(["sh", "-c", "exit 2"])


def test_a_deadline_kills_the_whole_process_group():
    started = time.monotonic()
    with pytest.raises(procs.ProcessFailed, match="did not finish within 1 s and was stopped"):
        # the grandchild (sleep in the background) is in the group too
        procs.run(["sh", "-c", "sleep 60 & echo $! >&2; wait"], timeout=1)
    assert time.monotonic() - started < 10


def test_a_program_that_cannot_start_says_so():
    with pytest.raises(procs.ProcessFailed, match="cannot start /nonexistent/pg_dump"):
        procs.run(["/nonexistent/pg_dump", "--version"])


def test_children_die_with_a_run_killed_by_sigkill(tmp_path):
    """kill -9 of the run: nothing it started keeps running (case 6 of issue 11)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from ansible_collections.doctorq.backup.plugins.module_utils import procs
        with procs.Pipe([["sleep", "300"], ["sleep", "301"]]) as pipe:
            print(" ".join(str(p.pid) for p in pipe.procs), flush=True)
            pipe.wait()
    """)
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)  # pylint: disable=consider-using-with
    pids = [int(p) for p in run.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    kill_soon = time.monotonic() + 0.02  # often before the children exec sleep: the guard covers that window too
    time.sleep(max(0.0, kill_soon - time.monotonic()))
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a child outlived the killed run"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching OS user needs root (CI runs as root)")
def test_runs_a_program_as_another_os_user_that_still_dies_with_the_run():
    done = procs.run(["id", "-un"], user="postgres")
    assert done.stdout.strip() == "postgres"
    with pytest.raises(procs.ProcessFailed, match="did not finish"):
        procs.run(["sleep", "30"], user="postgres", timeout=0.5)


def test_an_unknown_os_user_is_a_config_error():
    with pytest.raises(procs.ConfigError, match="OS user 'no-such-user-dq' does not exist"):
        procs.run(["true"], user="no-such-user-dq")


def test_a_stage_killed_by_sigpipe_is_not_blamed_for_a_later_stage_failing():
    # yes writes until head-like failure closes the pipe: the error to report is the second stage's
    with procs.Pipe([["yes"], ["sh", "-c", "head -c 10 >/dev/null; echo 'restore failed' >&2; exit 1"]]) as pipe:
        with pytest.raises(procs.ProcessFailed, match=r"^sh exited with status 1: restore failed$"):
            pipe.wait(timeout=30)


def test_stop_writers_kills_an_orphan_still_writing_into_a_leftover_directory(tmp_path):
    # what pg_dump -j's worker does after its leader died: keeps appending to a file of the backup's directory
    leftover = tmp_path / "db_full_20261203_010000.dir"
    leftover.mkdir()
    other = tmp_path / "elsewhere"
    other.mkdir()
    writer = textwrap.dedent("""
        import sys, time
        with open(sys.argv[1], "a") as out:
            while True:
                out.write("x"); out.flush(); time.sleep(0.01)
    """)
    orphan = subprocess.Popen([sys.executable, "-c", writer, str(leftover / "3012.dat")])
    bystander = subprocess.Popen([sys.executable, "-c", writer, str(other / "keep.dat")])
    # a worker between two tables holds no file open, but its argv (pg_dump's) names the directory
    idle = subprocess.Popen(["pg_dump", "-c", "import time; time.sleep(60)", f"--file={leftover}"],
                            executable=sys.executable)
    # another program naming the directory (an operator's ls, say) is no writer
    looker = subprocess.Popen(["ls", "-c", "import time; time.sleep(60)", str(leftover)], executable=sys.executable)
    try:
        deadline = time.monotonic() + 10
        while not (leftover / "3012.dat").exists() or not (other / "keep.dat").exists():
            assert time.monotonic() < deadline, "the writers never started"
            time.sleep(0.05)
        assert sorted(procs.stop_writers(str(leftover))) == sorted([orphan.pid, idle.pid])
        assert orphan.wait(5) == -signal.SIGKILL and idle.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None and looker.poll() is None  # a process writing elsewhere is not touched
    finally:
        for proc in (orphan, bystander, idle, looker):
            proc.kill()
            proc.wait()
