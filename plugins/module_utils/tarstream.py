# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A file set's archive in and out: GNU tar found and run, its listing and messages read, every member checked.

GNU tar runs with a C locale and no TAR_OPTIONS (``tool_env``); its optional
features are probed once. Out (the backup): tar's ``-vv`` index counted, the
files it reported as changed while read, a sample of content hashes read
again from disk. In (the restore and the drill): the archive's headers read
and refused whole if any member could be written outside the target, the
extracted tree counted the same way and compared with the sample.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import functools
import os
import posixpath
import re
import shutil
import stat
import tarfile
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, IntegrityError

# tar's messages (LC_ALL=C) for a file that was not read as one consistent state.
CHANGE_RE = re.compile(r"^(?:\S*/)?tar: (?P<path>.+): (?P<what>file changed as we read it|File removed before we read it|"
                       r"File shrank by \d+ bytes; padding with zeros)$")


@functools.lru_cache(maxsize=None)
def tar_features(tar: str) -> frozenset[str]:
    """Which optional GNU tar options this tar has (``--acls`` needs a tar built with libacl)."""
    try:
        out = procs.run([tar, "--help"], env=tool_env(), check=False).stdout
        version = procs.run([tar, "--version"], env=tool_env(), check=False).stdout
    except procs.ProcessFailed:
        return frozenset()
    if "GNU" not in version:
        return frozenset()
    return frozenset(opt for opt in ("--acls", "--xattrs", "--sparse", "--index-file") if opt in out) | {"gnu"}


def find_tar() -> str:
    tar = shutil.which("tar")
    if not tar or "gnu" not in tar_features(tar):
        raise DoctorqError("GNU tar not found on PATH: install the tar package (Debian's tar is GNU tar).")
    return tar


def tool_env() -> dict[str, str]:
    """C locale (tar's messages are parsed) and no TAR_OPTIONS that could change what is archived."""
    env = {k: v for k, v in os.environ.items() if k not in ("TAR_OPTIONS", "TAPE", "TAR_SUBCOMMAND")}
    env.update(LC_ALL="C", LANG="C")
    return env


@functools.lru_cache(maxsize=None)
def tar_version(tar: str) -> str:
    try:
        return procs.run([tar, "--version"], env=tool_env(), check=False).stdout.splitlines()[0]
    except (procs.ProcessFailed, IndexError):
        return ""


def parse_index(path: str) -> dict[str, int]:
    """Counts from tar's ``-vv`` listing: members, regular files (hard links too), dirs, symlinks, file bytes."""
    counts = {"count": 0, "files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            kind = parts[0][0]
            counts["count"] += 1
            if kind in "-h":
                counts["files"] += 1
                if kind == "-" and parts[2].isdigit():
                    counts["bytes"] += int(parts[2])
            elif kind == "d":
                counts["dirs"] += 1
            elif kind == "l":
                counts["symlinks"] += 1
    return counts


SAMPLE_FILES = 32
SAMPLE_MAX_BYTES = 64 * 1024 * 1024  # per file, and 4 times that in all: a sample, not a second backup


def unescape_member(name: str) -> str:
    """A member name as tar's ``--quoting-style=escape`` printed it (C locale: octal for non-ASCII bytes)."""
    if "\\" not in name:
        return name
    raw, _len = codecs.escape_decode(name.encode("latin-1", "backslashreplace"))
    return os.fsdecode(raw)


def regular_members(path: str) -> list[tuple[str, int]]:
    """(member name, size) of the regular files in tar's ``-vv`` listing, in archive order."""
    found = []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) == 6 and parts[0].startswith("-") and parts[2].isdigit():
                found.append((unescape_member(parts[5]), int(parts[2])))
    return found


def content_sample(job_root: str, index: str, not_after_ns: int) -> list[dict[str, Any]]:
    """SHA-256 of up to SAMPLE_FILES regular files spread over the archive, read again from disk.

    Only files whose inode did not change since before tar started (ctime
    before the run, the same after hashing) are taken, so the bytes hashed are
    the bytes tar archived; a restore (or a drill) compares them with what it
    extracted.
    """
    candidates = [(n, size) for n, size in regular_members(index) if size <= SAMPLE_MAX_BYTES]
    step = max(1, len(candidates) // SAMPLE_FILES)
    sample: list[dict[str, Any]] = []
    budget = 4 * SAMPLE_MAX_BYTES
    for name, size in candidates[::step]:
        if size > budget:
            continue
        path = os.path.join(job_root, name)
        try:
            before = os.lstat(path)
            if not stat.S_ISREG(before.st_mode) or before.st_ctime_ns >= not_after_ns or before.st_size != size:
                continue
            with open(path, "rb") as handle:
                digest = pipeline.copy_hashed(handle)
            after = os.lstat(path)
        except OSError:
            continue
        budget -= digest.size
        if after.st_ctime_ns == before.st_ctime_ns and after.st_size == before.st_size == digest.size:
            sample.append({"path": posixpath.normpath(name), "size": digest.size, "sha256": digest.sha256})
        if len(sample) >= SAMPLE_FILES:
            break
    return sample


def check_sample(top: str, sample: list[dict[str, Any]]) -> list[str]:
    """Files of the manifest's sample that are missing or differ below ``top``."""
    problems = []
    for item in sample:
        path = os.path.join(top, item["path"])
        try:
            with open(path, "rb") as handle:
                digest = pipeline.copy_hashed(handle)
        except OSError as exc:
            problems.append(f"{item['path']}: {exc.strerror}")
            continue
        if (digest.size, digest.sha256) != (item["size"], item["sha256"]):
            problems.append(f"{item['path']}: {digest.size} bytes, sha256 {digest.sha256}; the backup recorded "
                            f"{item['size']} bytes, sha256 {item['sha256']}")
    return problems


def changed_files(stderr: str) -> list[dict[str, str]]:
    found = []
    for line in stderr.splitlines():
        match = CHANGE_RE.match(line.strip())
        if match:
            found.append({"path": match.group("path"), "reason": match.group("what")})
    return found


@dataclasses.dataclass
class Member:
    """What the archive holds, from its headers, counted the way the extracted tree is counted."""

    count: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0


def member_problem(member: tarfile.TarInfo, symlinks: set[str]) -> str | None:
    """Why extracting ``member`` could write outside the target, or None."""
    name = member.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "'..' in the path"
    clean = posixpath.normpath(name)
    if member.islnk():
        if member.linkname.startswith("/") or ".." in member.linkname.split("/"):
            return f"hard link to {member.linkname!r} outside the archive"
    if member.ischr() or member.isblk():
        return "device file"
    parent = clean
    while "/" in parent:
        parent = parent.rsplit("/", 1)[0]
        if parent in symlinks:
            return f"path through the archive's symlink {parent!r}"
    return None


def inspect_archive(path: str, compression: str) -> Member:
    """Read every header of a (verified) archive; refuse it whole if any member could escape the target."""
    decompress = pipeline.decompressor_argv(compression)
    with open(path, "rb") as raw, (procs.Pipe([decompress], stdin=raw) if decompress else contextlib.nullcontext()) as pipe:
        stream = pipe.stdout if pipe else raw
        counts, symlinks, bad, unreadable = Member(), set(), [], None
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    problem = member_problem(member, symlinks)
                    if problem:
                        bad.append(f"{member.name!r} ({problem})")
                        continue
                    counts.count += 1
                    if member.isreg() or member.islnk():
                        counts.files += 1
                        counts.bytes += member.size if member.isreg() else 0
                    elif member.isdir():
                        counts.dirs += 1
                    elif member.issym():
                        counts.symlinks += 1
                        symlinks.add(posixpath.normpath(member.name))
        except tarfile.TarError as exc:
            unreadable = exc
        if pipe:  # the decompressor's status says more than tar's "unexpected end of data"
            while stream.read(1 << 20):  # what follows the end-of-archive blocks
                pass
            try:
                pipe.wait()
            except procs.ProcessFailed as exc:
                raise IntegrityError(f"decompressing {path} failed ({exc}); nothing was extracted.") from None
    if unreadable:
        raise IntegrityError(f"{path} is not a readable tar archive ({unreadable}); nothing was extracted.")
    if bad:
        raise IntegrityError(f"{path} holds {len(bad)} member(s) that would be written outside the target: "
                             f"{', '.join(bad[:10])}. Refusing to restore it; nothing was extracted.")
    return counts


def tree_counts(top: str) -> Member:
    """Counts of an extracted tree, as inspect_archive counts an archive (hard-linked bytes once)."""
    counts, inodes = Member(), set()
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISLNK(st.st_mode):
                counts.symlinks += 1
                if name in dirs:
                    dirs.remove(name)
            elif stat.S_ISDIR(st.st_mode):
                counts.dirs += 1
            elif stat.S_ISREG(st.st_mode):
                counts.files += 1
                if (st.st_dev, st.st_ino) not in inodes:
                    inodes.add((st.st_dev, st.st_ino))
                    counts.bytes += st.st_size
    return counts
