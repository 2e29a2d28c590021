"""The file-set backup job's options without a server: root, member names, self-excludes, tar's argv."""
from __future__ import annotations

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.files_backup_job import FilesJob


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
