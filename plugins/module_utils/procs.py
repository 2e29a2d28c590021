# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every child process the engine starts goes through here: one runner.

What each one gets, whatever it is (pg_dump | zstd, zstd -dc | pg_restore,
psql, tar, pgbackrest, pg_ctl, systemctl):

- a list argv, never a shell string; the C locale, so messages we parse and
  show are the same everywhere;
- death with the run: each child is started through ``setpriv --pdeathsig
  KILL`` (util-linux, on every Debian and RHEL host), so a ``kill -9`` of the
  run never leaves a pg_restore writing into a database nobody watches; the
  children of one call share their own process group, which a deadline or a
  failure kills as a whole;
- another OS user when asked (the cluster's owner, for pgBackRest and
  pg_ctl): ``setpriv --reuid/--regid/--init-groups`` execs the program itself,
  so the death signal reaches the real program, not a wrapper;
- every stage's exit status checked (none is lost in a pipe), and the tail of
  its stderr in the error;
- a deadline for the whole call, when the caller gives one.

The death signal belongs to the thread that started the child: start
children from the run's own thread, not from a worker thread that ends first.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Callable, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, DoctorqError

STDERR_TAIL = 2000
_SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ProcessFailed(DoctorqError):
    """A program exited non-zero (or could not start, or ran past its deadline)."""

    def __init__(self, msg: str, name: str = "", status: int | None = None, stderr: str = "") -> None:
        super().__init__(msg)
        self.name, self.status, self.stderr = name, status, stderr


def c_locale(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) with the C locale forced: messages are parsed and shown, never translated."""
    out = dict(os.environ if env is None else env)
    out.update(LC_ALL="C", LANG="C")
    out.setdefault("PATH", _SBIN_PATH)
    return out


def _setpriv() -> str | None:
    return shutil.which("setpriv", path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


def _parent_guard() -> list[str]:
    """Exec the program only if the run is still its parent.

    setpriv sets the death signal in the child, after the fork: a run killed
    in between would leave the program running. Once the signal is set, the
    parent being still there (``$PPID``) means the program dies with it.
    """
    return ["/bin/sh", "-c", f'test "$PPID" = {os.getpid()} || exit 125; exec "$@"', "doctorq-child"]


def user_prefix(user: str | None) -> list[str]:
    """The argv prefix that runs a program as ``user`` and kills it when the run dies."""
    setpriv = _setpriv()
    prefix = [setpriv, "--pdeathsig", "KILL", *_parent_guard()] if setpriv else []
    if not user:
        return prefix
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"OS user {user!r} does not exist: name the database's OS user (usually postgres).") from None
    if os.geteuid() == entry.pw_uid:
        return prefix
    if os.geteuid() != 0:
        raise ConfigError(f"this must run as the OS user {user!r} or as root (become: true); it runs as uid {os.geteuid()}.")
    if not setpriv:
        raise ConfigError("setpriv (util-linux) is missing: it is needed to run programs as the database's OS user.")
    return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--pdeathsig", "KILL",
            *_parent_guard()]


@dataclasses.dataclass
class Done:
    """A finished program: its status, its output (when captured) and its stderr."""

    name: str
    status: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr on one line, for messages."""
        return " ".join((self.stdout + " " + self.stderr).split())


def _tail(raw: bytes) -> str:
    return raw[-STDERR_TAIL:].decode("utf-8", "replace").strip()


class Pipe:
    """Programs connected by OS pipes (``a | b | c``), started at once; use as a context manager.

    ``stdin``: a file object, an fd, or None (``/dev/null``); ``stdout``: a
    file object or fd for the last stage's output, or None to read it from
    ``.stdout``, or ``subprocess.DEVNULL``. Leaving the ``with`` block by an
    exception kills every stage (the whole process group) and waits for it.
    """

    def __init__(self, stages: Sequence[Sequence[str] | None], *, env: dict[str, str] | None = None,
                 stdin: Any = None, stdout: Any = None, names: Sequence[str] | None = None,
                 user: str | None = None, cwd: str | None = "/") -> None:
        self.argvs = [list(s) for s in stages if s]
        if not self.argvs:
            raise ValueError("a pipe needs at least one program")
        self.names = list(names or [os.path.basename(a[0]) for a in self.argvs])
        self.procs: list[subprocess.Popen] = []
        self._errfiles = [tempfile.TemporaryFile() for _argv in self.argvs]  # pylint: disable=consider-using-with
        prefix = user_prefix(user)
        env = c_locale(env)
        group = None
        prev: Any = subprocess.DEVNULL if stdin is None else stdin
        try:
            for index, (argv, errf) in enumerate(zip(self.argvs, self._errfiles)):
                last = index == len(self.argvs) - 1
                out = (subprocess.PIPE if stdout is None else stdout) if last else subprocess.PIPE
                binary = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env["PATH"])
                if not binary or not os.access(binary, os.X_OK):
                    raise ProcessFailed(f"cannot start {argv[0]}: not found or not executable; is it installed?",
                                        name=self.names[index])
                kwargs: dict[str, Any] = {}
                if sys.version_info >= (3, 11):
                    kwargs["process_group"] = 0 if group is None else group
                try:
                    proc = subprocess.Popen(prefix + [binary] + argv[1:], stdin=prev, stdout=out, stderr=errf, env=env,  # pylint: disable=consider-using-with
                                            close_fds=True, cwd=cwd, **kwargs)
                except OSError as exc:
                    raise ProcessFailed(f"cannot start {argv[0]}: {exc.strerror}; is it installed?",
                                        name=self.names[index]) from None
                if group is None:
                    group = proc.pid
                if index > 0 and prev is not None:
                    prev.close()  # the child holds it now; we must not, or EOF never comes
                self.procs.append(proc)
                prev = proc.stdout if not last else None
        except BaseException:
            self.kill()
            self._close()
            raise
        self.group = group

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.procs[-1].stdout

    def __enter__(self) -> "Pipe":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None:
            self.kill()
        self._close()

    def kill(self) -> None:
        """Stop every stage now (the whole group, grandchildren included) and reap them."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    if proc.pid == self.group:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.kill()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def _close(self) -> None:
        if self.procs and self.procs[-1].stdout:
            self.procs[-1].stdout.close()
        for errf in self._errfiles:
            errf.close()

    def wait(self, timeout: float | None = None, accept: Callable[[int, int, str], bool] | None = None) -> list[str]:
        """Wait for every stage; raise ProcessFailed for the first that failed. Returns each stage's stderr.

        ``timeout``: seconds for the whole pipe, after which every stage is
        killed. ``accept(index, status, stderr)`` may declare a non-zero status
        a success (GNU tar's 1: "a file changed as we read it"). A stage killed
        by SIGPIPE because a later one failed is not the cause: in ``zstd -dc |
        pg_restore`` the error to report is pg_restore's, not "zstd was killed
        by signal 13".
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc, name in zip(self.procs, self.names):
            try:
                proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                raise ProcessFailed(f"{name} did not finish within {timeout:.0f} s and was stopped.", name=name) from None
        errors = []
        for index, (proc, name, errf) in enumerate(zip(self.procs, self.names, self._errfiles)):
            errf.seek(0)
            stderr = errf.read()
            errors.append(stderr.decode("utf-8", "replace"))
            code = proc.returncode
            if code == 0 or (accept is not None and accept(index, code, errors[-1])):
                continue
            if code == -signal.SIGPIPE and any(later.returncode for later in self.procs[index + 1:]):
                continue  # the later stage's failure is raised below
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise ProcessFailed(f"{name} {how}: {_tail(stderr) or 'no message'}", name=name, status=code,
                                stderr=errors[-1])
        return errors


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        stdin: Any = None, input: bytes | str | None = None,  # pylint: disable=redefined-builtin
        stdout: Any = None, timeout: float | None = None, check: bool = True, name: str | None = None,
        cwd: str | None = "/") -> Done:
    """Run one program to its end; its output captured (unless ``stdout`` is given) and checked.

    With ``check=False`` a non-zero status is returned in ``Done.status``
    instead of raised; a program that cannot start or passes its deadline
    raises either way.
    """
    name = name or os.path.basename(argv[0])
    tmp_in = None
    if input is not None:
        tmp_in = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
        tmp_in.write(input.encode() if isinstance(input, str) else input)
        tmp_in.seek(0)
        stdin = tmp_in
    out_file = tempfile.TemporaryFile() if stdout is None else None  # pylint: disable=consider-using-with
    try:
        with Pipe([argv], env=env, stdin=stdin, stdout=out_file if out_file else stdout, names=[name], user=user,
                  cwd=cwd) as pipe:
            try:
                errors = pipe.wait(timeout)
                status = 0
            except ProcessFailed as exc:
                if check or exc.status is None:
                    raise
                errors, status = [exc.stderr], exc.status
        captured = ""
        if out_file is not None:
            out_file.seek(0)
            captured = out_file.read().decode("utf-8", "replace")
        return Done(name, status, captured, errors[0])
    finally:
        for handle in (tmp_in, out_file):
            if handle is not None:
                handle.close()


def stop_writers(directory: str, grace: float = 10.0) -> list[int]:
    """Kill the processes that still write into ``directory``; return their pids.

    For the leftovers of a dead run only: the death signal reaches the
    programs we start, not what they fork themselves (pg_dump -j's workers
    finish the table they are writing before they notice their leader is
    gone), so such an orphan may still be writing into an interrupted
    backup's directory when the next run, holding the job's lock, removes it.
    A writer is a process that holds a file under ``directory`` open, or a
    pg_dump that names the directory in its argv (a worker between two tables
    holds none); only processes of our own user are considered (any, as root).
    """
    names = {os.path.abspath(directory), os.path.realpath(directory)}
    mine, uid = os.getpid(), os.geteuid()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            if uid != 0 and os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            if _writes_into(entry, names):
                found.append(int(entry))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(pid) for pid in found):
        time.sleep(0.05)
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has closed its files: it waits only for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _writes_into(pid: str, names: set[str]) -> bool:
    """Whether process ``pid`` has a file in one of ``names`` (a directory's spellings) open, or is a pg_dump naming it."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        argv = handle.read().decode("utf-8", "surrogateescape").split("\0")
    if os.path.basename(argv[0]) == "pg_dump" and any(arg in names or arg.partition("=")[2] in names for arg in argv):
        return True
    fd_dir = f"/proc/{pid}/fd"
    return any(os.path.dirname(os.readlink(os.path.join(fd_dir, fd))) in names for fd in os.listdir(fd_dir))
