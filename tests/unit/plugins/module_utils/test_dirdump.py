"""dirdump and inotify without servers: options, sidecars, close events, and the run around a stand-in pg_dump.

The stand-in is a real program (sh) that writes files into the directory the
way pg_dump -Fd does; the real pg_dump runs in tests/integration/test_dirdump.py.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
import types

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import dirdump, inotify, procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, IntegrityError, StorageError


def test_compress_option_per_client_version():
    assert dirdump.compress_option("none", None, 15) == "0"
    assert dirdump.compress_option("gzip", None, 15) == "6"
    assert dirdump.compress_option("gzip", 1, 16) == "gzip:1"
    assert dirdump.compress_option("zstd", None, 16) == "zstd:3"
    with pytest.raises(ConfigError, match="pg_dump 15 writes directory dumps with gzip only"):
        dirdump.compress_option("zstd", 3, 15)
    with pytest.raises(ConfigError, match="out of range for gzip: use 1 to 9"):
        dirdump.compress_option("gzip", 12, 15)
    with pytest.raises(ConfigError, match="is not one of gzip, zstd, none"):
        dirdump.compress_option("lzma", None, 16)


def test_dump_argv_adds_the_directory_format_and_refuses_zero_jobs():
    assert dirdump.dump_argv(["pg_dump", "--no-password"], "/b/x.dir", 2, "6") == [
        "pg_dump", "--no-password", "--format=directory", "--jobs=2", "--compress=6", "--file=/b/x.dir"]
    with pytest.raises(ConfigError, match="jobs is 0"):
        dirdump.dump_argv(["pg_dump"], "/b/x.dir", 0, "6")


def test_sidecar_lines_name_each_file_inside_the_directory_sorted():
    files = [dirdump.DirFile("toc.dat", 3, "b" * 64, "d" * 32), dirdump.DirFile("3346.dat.gz", 5, "a" * 64, "c" * 32)]
    assert dirdump.sidecar_text("x.dir", files, "sha256") == (f"{'a' * 64}  x.dir/3346.dat.gz\n"
                                                              f"{'b' * 64}  x.dir/toc.dat\n").encode()
    assert dirdump.sidecar_text("x.dir", files, "md5").splitlines()[1] == f"{'d' * 32}  x.dir/toc.dat".encode()


def test_write_watch_reports_files_created_and_closed_after_writing(tmp_path):
    with inotify.WriteWatch(str(tmp_path)) as watch:
        assert watch.read(0) == []
        (tmp_path / "a.dat").write_bytes(b"x")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "deep").write_bytes(b"y")  # not watched: one directory only
        with open(tmp_path / "a.dat", "rb") as handle:  # read-only close: no event
            handle.read()
        (tmp_path / "b.dat").write_bytes(b"z")
        assert watch.read(1.0) == [("created", "a.dat"), ("closed", "a.dat"), ("created", "b.dat"), ("closed", "b.dat")]
        assert not watch.overflowed
    with pytest.raises(OSError, match="cannot watch"):
        inotify.WriteWatch(str(tmp_path / "missing"))


def fake_pg_dump(script: str) -> list[str]:
    """argv of a stand-in pg_dump: ``script`` runs with $1 = the directory (appended by the caller)."""
    return ["/bin/sh", "-c", script, "pg_dump"]


def test_each_file_is_hashed_once_and_listed_with_sidecars(tmp_path):
    directory = str(tmp_path / "x.dir")
    events: list[tuple[str, object]] = []
    script = ('cd "$1" && printf toc > toc.dat && printf 1111 > 1.dat && sleep 1 && printf 22 > 2.dat '
              '&& exec 3<>toc.dat && exec 3>&-')  # the last open/close without a write: as pg_dump's fsync pass
    result = dirdump.run(fake_pg_dump(script) + [directory], {}, directory,
                         observe=lambda kind, detail: events.append((kind, detail)))
    # in the order stored (toc.dat and 1.dat close within the same instant: either may come first)
    assert sorted((f.name, f.size) for f in result.files) == [("1.dat", 4), ("2.dat", 2), ("toc.dat", 3)]
    assert result.files[-1].name == "2.dat"
    assert [kind for kind, _detail in events].count("closed") == 3  # toc.dat's second close is no second store
    assert min(f.stored_s for f in result.files) < 1.0 < result.exited_s  # stored while the program was still running
    assert result.late == []
    done = subprocess.run(["sha256sum", "-c", "x.dir.sha256"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.count(": OK") == 3
    assert oct(os.stat(result.sidecars["md5"]).st_mode & 0o777) == "0o600"


class RecordingSink:
    """dirdump's sink interface (as DiskOnly, S3Upload): records when each file's bytes arrive."""

    where = ""

    def __init__(self) -> None:
        self.writes: dict[str, list[tuple[float, bytes]]] = {}
        self.sizes: dict[str, int | None] = {}

    def open(self, name, size):
        self.sizes[name] = size
        writes = self.writes.setdefault(name, [])
        sink = types.SimpleNamespace(write=lambda chunk: writes.append((time.monotonic(), bytes(chunk))),
                                     commit=lambda digest: None, abort=lambda: None)
        return sink

    def discard(self) -> str:
        return ""


def test_a_file_is_read_while_pg_dump_writes_it_and_finished_at_its_close(tmp_path):
    directory = str(tmp_path / "x.dir")
    closes: dict[str, float] = {}
    sink = RecordingSink()
    script = 'cd "$1" && exec 3>1.dat && printf head >&3 && sleep 1 && printf tail >&3 && exec 3>&- && printf t > toc.dat'
    result = dirdump.run(fake_pg_dump(script) + [directory], {}, directory, sink,
                         observe=lambda kind, detail: closes.setdefault(detail, time.monotonic()) if kind == "closed" else None)
    writes = sink.writes["1.dat"]
    assert b"".join(chunk for _at, chunk in writes) == b"headtail"
    assert writes[0][0] < closes["1.dat"] - 0.5  # its first bytes went to the sink while pg_dump still held it open
    assert sink.sizes["1.dat"] is None  # its size was not known then
    entry = next(f for f in result.files if f.name == "1.dat")
    assert (entry.size, entry.sha256) == (8, hashlib.sha256(b"headtail").hexdigest())


def test_a_failing_pg_dump_removes_the_directory_and_says_so(tmp_path):
    directory = str(tmp_path / "x.dir")
    with pytest.raises(procs.ProcessFailed) as failed:
        dirdump.run(fake_pg_dump('cd "$1" && printf x > toc.dat && echo "pg_dump: error: query failed" >&2; exit 1')
                    + [directory], {}, directory)
    assert "pg_dump exited with status 1: pg_dump: error: query failed" in str(failed.value)
    assert "nothing of it is listed as complete. Nothing of it was kept" in str(failed.value)
    assert os.listdir(tmp_path) == []


def test_a_file_rewritten_after_its_close_fails_the_dump(tmp_path):
    directory = str(tmp_path / "x.dir")
    script = 'cd "$1" && printf aa > 1.dat && sleep 0.3 && printf bbbb > 1.dat'
    with pytest.raises(IntegrityError, match="1.dat in .* changed after pg_dump first closed it"):
        dirdump.run(fake_pg_dump(script) + [directory], {}, directory)
    assert os.listdir(tmp_path) == []


def test_an_existing_directory_is_refused_untouched(tmp_path):
    (tmp_path / "x.dir").mkdir()
    (tmp_path / "x.dir" / "keep").write_bytes(b"k")
    with pytest.raises(StorageError, match="exists already"):
        dirdump.run(fake_pg_dump("exit 0"), {}, str(tmp_path / "x.dir"))
    assert os.listdir(tmp_path / "x.dir") == ["keep"]
