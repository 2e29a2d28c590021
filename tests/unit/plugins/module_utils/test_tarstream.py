"""A file set's archive without a server: member checks, tar's messages, its index and escaped names."""
from __future__ import annotations

import tarfile

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.tarstream import (
    changed_files, member_problem, parse_index, regular_members, unescape_member,
)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("info, problem", [
    (member("./docs/a.txt"), None),
    (member("etc/postgresql/15/main/pg_hba.conf"), None),
    (member("link", tarfile.SYMTYPE, "/etc/ssl/certs/x.pem"), None),  # a symlink's target is data
    (member("a/hl", tarfile.LNKTYPE, "a/b"), None),
    (member("/etc/passwd"), "absolute path"),
    (member("../x"), "'..' in the path"),
    (member("a/../../x"), "'..' in the path"),
    (member("a/hl", tarfile.LNKTYPE, "/etc/shadow"), "hard link to '/etc/shadow' outside the archive"),
    (member("a/hl", tarfile.LNKTYPE, "../../etc/shadow"), "hard link to '../../etc/shadow' outside the archive"),
    (member("esc/x"), "path through the archive's symlink 'esc'"),
    (member("esc/deeper/x"), "path through the archive's symlink 'esc'"),
    (member("dev", tarfile.BLKTYPE), "device file"),
])
def test_member_problems(info, problem):
    assert member_problem(info, {"esc"}) == problem


def test_tar_messages_and_index():
    stderr = ("/usr/bin/tar: ./log/app.log: file changed as we read it\n"
              "tar: ./tmp/gone: File removed before we read it\n"
              "tar: ./db.img: File shrank by 100 bytes; padding with zeros\n"
              "tar: ./sock: socket ignored\n")
    assert changed_files(stderr) == [
        {"path": "./log/app.log", "reason": "file changed as we read it"},
        {"path": "./tmp/gone", "reason": "File removed before we read it"},
        {"path": "./db.img", "reason": "File shrank by 100 bytes; padding with zeros"},
    ]


def test_parse_index(tmp_path):
    index = tmp_path / "index"
    index.write_text("\n".join([
        "drwxr-xr-x  0/0               0 2025-11-07 02:00:00.1 ./",
        "-rw-r--r--  4321/8765       300 2025-11-07 02:00:00.1 ./a b.txt",
        "hrw-r--r--  0/0               0 2025-11-07 02:00:00.1 ./hl link to ./a b.txt",
        "lrwxrwxrwx  0/0               0 2025-11-07 02:00:00.1 ./l -> a b.txt",
        "prw-r--r--  0/0               0 2025-11-07 02:00:00.1 ./fifo",
    ]) + "\n", encoding="utf-8")
    index = str(index)
    assert parse_index(index) == {"count": 5, "files": 2, "dirs": 1, "symlinks": 1, "bytes": 300}
    assert regular_members(index) == [("./a b.txt", 300)]


def test_member_names_as_tar_escapes_them():
    assert unescape_member("./plain name.txt") == "./plain name.txt"
    assert unescape_member("./r\\303\\251sum\\303\\251.txt") == "./résumé.txt"
    assert unescape_member("./line\\nbreak\\\\x") == "./line\nbreak\\x"
