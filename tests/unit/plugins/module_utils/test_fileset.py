"""A file set's definition without a server: the postgresql.conf reader and the configuration preset."""
from __future__ import annotations

import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.fileset import pg_conf_settings, postgresql_config_paths


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
    write(tmp_path / "data13" / "postgresql.auto.conf", "work_mem = '64MB'\n")  # ALTER SYSTEM's settings
    write(root / "15" / "main" / "postgresql.conf", f"ssl_cert_file = '{root / '15' / 'main' / 'inside.pem'}'\n"
          f"data_directory = '{tmp_path / 'data15'}'\n")
    write(root / "15" / "other" / "postgresql.conf", "")
    paths, warnings = postgresql_config_paths(str(root), None, "main")
    assert paths == [str(root / "13" / "main"), str(tmp_path / "data13" / "server.crt"),
                     str(tmp_path / "data13" / "postgresql.auto.conf"), str(root / "15" / "main")]
    # 15/main's data directory is not here: neither are its ALTER SYSTEM settings
    assert len(warnings) == 2 and "server.key" in warnings[0] and "ALTER SYSTEM settings are not in the backup" in warnings[1]
    paths, _warnings = postgresql_config_paths(str(root), "15", "other")
    assert paths == [str(root / "15" / "other")]
    with pytest.raises(ConfigError, match="pg_lsclusters"):
        postgresql_config_paths(str(root), "16", "main")
