"""File sets: what the engine decides without a server (config parsing, archive checks, tar's messages)."""
from __future__ import annotations

import os
import sys
import tarfile

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.files import (
    FilesJob, FilesRestoreJob, changed_files, member_problem, parse_index, pg_conf_settings, postgresql_config_paths,
    regular_members, unescape_member,
)


def write(path, text: str) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)


def test_postgresql_conf_values_includes_and_last_one_wins(tmp_path):
    conf = write(tmp_path / "postgresql.conf", "\n".join([
        "# ssl_cert_file = '/commented/out.pem'",
        "ssl_cert_file = '/etc/ssl/a.pem'   # first",
        "ssl_key_file='it''s here.key'",
        "port 5433",
        "include_dir 'conf.d'",
        "include_if_exists = 'missing.conf'",
        "Hba_File = '/etc/x/pg_hba.conf' # case-insensitive names",
    ]) + "\n")
    write(tmp_path / "conf.d" / "50-ssl.conf", "ssl_cert_file = '/etc/ssl/b.pem'\n")
    write(tmp_path / "conf.d" / "README", "ssl_cert_file = '/not/a/conf/file'\n")
    settings, files = pg_conf_settings(conf)
    assert settings["ssl_cert_file"] == "/etc/ssl/b.pem"
    assert settings["ssl_key_file"] == "it's here.key"
    assert settings["port"] == "5433" and settings["hba_file"] == "/etc/x/pg_hba.conf"
    assert files == [conf, str(tmp_path / "conf.d" / "50-ssl.conf")]
    write(tmp_path / "broken.conf", "include 'nowhere.conf'\n")
    with pytest.raises(ConfigError, match="does not exist"):
        pg_conf_settings(str(tmp_path / "broken.conf"))


def test_preset_finds_every_version_of_the_cluster_and_the_files_named_outside(tmp_path):
    root = tmp_path / "etc" / "postgresql"
    write(root / "13" / "main" / "postgresql.conf", "ssl = on\n"
          f"data_directory = '{tmp_path / 'data13'}'\n")  # ssl on, no file named: server.crt/.key of the data dir
    write(tmp_path / "data13" / "server.crt", "c")
    write(root / "15" / "main" / "postgresql.conf", f"ssl_cert_file = '{root / '15' / 'main' / 'inside.pem'}'\n")
    write(root / "15" / "other" / "postgresql.conf", "")
    paths, warnings = postgresql_config_paths(str(root), None, "main")
    assert paths == [str(root / "13" / "main"), str(tmp_path / "data13" / "server.crt"), str(root / "15" / "main")]
    assert len(warnings) == 1 and "server.key" in warnings[0]
    paths, _warnings = postgresql_config_paths(str(root), "15", "other")
    assert paths == [str(root / "15" / "other")]
    with pytest.raises(ConfigError, match="pg_lsclusters"):
        postgresql_config_paths(str(root), "16", "main")


def test_root_and_member_names(tmp_path):
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    one = FilesJob.from_params({"name": "app", "paths": [str(app) + "/"], "backup_dir": str(app / "sub" / "bk")})
    assert one.root == str(app) and one.members == ["."]
    assert one.self_excludes() == ["sub/bk", "./sub/bk"]
    two = FilesJob.from_params({"name": "app", "paths": [str(app), "/etc/hostname", str(app / "sub")],
                                "backup_dir": "/var/b"})
    assert two.root == "/" and two.members == [str(app)[1:], "etc/hostname"] and two.self_excludes() == []
    argv = two.tar_argv("/usr/bin/tar", "/tmp/index")
    assert argv[-3:] == ["--", str(app)[1:], "etc/hostname"] and "--numeric-owner" in argv and "--sparse" in argv
    with pytest.raises(ConfigError, match="compression_level"):
        FilesJob.from_params({"name": "app", "paths": [str(app)], "compression_level": 30})
    with pytest.raises(ConfigError, match="target / cannot"):
        FilesRestoreJob.from_params({"name": "app", "target": "/"})
    with pytest.raises(ConfigError, match="file-set name"):
        FilesRestoreJob.from_params({"name": "weekly"})
    with pytest.raises(ConfigError, match="too long for a file-set name"):
        FilesRestoreJob.from_params({"name": "é" * 32})  # 192 characters once encoded
    assert FilesRestoreJob.from_params({"name": "../x"}).name == "../x"  # any name: encoded in file names and keys


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
    index = write(tmp_path / "index", "\n".join([
        "drwxr-xr-x  0/0               0 2025-11-07 02:00:00.1 ./",
        "-rw-r--r--  4321/8765       300 2025-11-07 02:00:00.1 ./a b.txt",
        "hrw-r--r--  0/0               0 2025-11-07 02:00:00.1 ./hl link to ./a b.txt",
        "lrwxrwxrwx  0/0               0 2025-11-07 02:00:00.1 ./l -> a b.txt",
        "prw-r--r--  0/0               0 2025-11-07 02:00:00.1 ./fifo",
    ]) + "\n")
    assert parse_index(index) == {"count": 5, "files": 2, "dirs": 1, "symlinks": 1, "bytes": 300}
    assert regular_members(index) == [("./a b.txt", 300)]


def test_member_names_as_tar_escapes_them():
    assert unescape_member("./plain name.txt") == "./plain name.txt"
    assert unescape_member("./r\\303\\251sum\\303\\251.txt") == "./résumé.txt"
    assert unescape_member("./line\\nbreak\\\\x") == "./line\nbreak\\x"


def test_pipeline_accept_turns_a_known_status_into_a_success_and_sees_stderr(tmp_path):
    seen = []
    stage = [sys.executable, "-c", "import sys; sys.stdout.write('data'); sys.stderr.write('warned'); sys.exit(1)"]
    sink = pipeline.LocalSink(str(tmp_path / "out"))
    digest, _results = pipeline.run(
        [stage], dict(os.environ), [sink],
        accept=lambda index, status, err: seen.append((index, status, err)) or status == 1)
    assert seen == [(0, 1, "warned")] and digest.size == 4 and (tmp_path / "out").read_bytes() == b"data"
    sink = pipeline.LocalSink(str(tmp_path / "refused"))
    with pytest.raises(pipeline.StageFailed, match="status 1: warned"):
        pipeline.run([stage], dict(os.environ), [sink], accept=lambda index, status, err: False)
    assert not (tmp_path / "refused").exists() and not (tmp_path / ".refused.partial").exists()
