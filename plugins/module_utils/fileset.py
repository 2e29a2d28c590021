# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A file set's definition: its name, its paths (one under another, one root), and the PostgreSQL configuration preset.

The preset (``preset: postgresql_config``) reads postgresql.conf as the server
does (includes, the last setting wins) to add the files it names outside the
cluster's configuration directory: certificates and keys in /etc/ssl, an
hba_file elsewhere, and postgresql.auto.conf (ALTER SYSTEM's settings, read
last) from the data directory. Both file-set jobs (files_backup_job.py,
files_restore_job.py), the drills and the command line take names and paths
from here.
"""

from __future__ import annotations

import os
import re

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import encode_name
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError

TYPE = "file_set"
PRESETS = ("postgresql_config",)
# A set's name, encoded (catalog.encode_name), starts every file name of its backups: room for the rest of them.
MAX_SET_NAME = 189
# ALTER SYSTEM's file, in the data directory.
AUTO_CONF = "postgresql.auto.conf"
# Settings of postgresql.conf that name files the server needs to start as it did.
PG_FILE_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir", "hba_file",
                    "ident_file")


def check_set_name(name: str | None) -> str:
    """Any name but ``weekly`` (the S3 folder of weekly copies); in file names and keys it is encoded (encode_name)."""
    if not name or name == "weekly":
        raise ConfigError(f"name {name!r} is not a usable file-set name: give the set a name ('weekly' is reserved "
                          "for the weekly copies' S3 folder).")
    if len(encode_name(name)) > MAX_SET_NAME:
        raise ConfigError(f"name {name!r} is too long for a file-set name: it starts the name of every backup file, "
                          f"and a file name has at most 255 bytes; use at most {MAX_SET_NAME} letters, digits, '.', "
                          "'_' and '-' (other characters count three each, more outside ASCII).")
    return name


def norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


# --------------------------------------------------------------------------
# the PostgreSQL configuration preset


def _pg_value(raw: str) -> str:
    """A postgresql.conf value: a quoted string ('' and \\' escapes) or a bare word, comments removed."""
    raw = raw.strip()
    if raw.startswith("'"):
        out, i = [], 1
        while i < len(raw):
            char = raw[i]
            if char == "\\" and i + 1 < len(raw):
                out.append(raw[i + 1])
                i += 2
                continue
            if char == "'":
                if raw[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(char)
            i += 1
        return "".join(out)
    return raw.split("#", 1)[0].strip()


def pg_conf_settings(path: str, _depth: int = 0) -> tuple[dict[str, str], list[str]]:
    """Settings of a postgresql.conf (the last one wins) and every file it includes, in the server's order."""
    settings: dict[str, str] = {}
    files = [path]
    if _depth > 10:
        raise ConfigError(f"{path}: include nesting deeper than 10.")
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    base = os.path.dirname(path)
    for line in lines:
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=\s*|\s+)(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        key, value = match.group(1).lower(), _pg_value(match.group(2))
        if key in ("include", "include_if_exists", "include_dir"):
            target = value if os.path.isabs(value) else os.path.join(base, value)
            if key == "include_dir":
                included = sorted(os.path.join(target, n) for n in os.listdir(target)
                                  if n.endswith(".conf") and not n.startswith(".")) if os.path.isdir(target) else []
            elif os.path.isfile(target):
                included = [target]
            elif key == "include":
                raise ConfigError(f"{path} includes {target}, which does not exist: the server would not start either.")
            else:
                included = []
            for child in included:
                sub, subfiles = pg_conf_settings(child, _depth + 1)
                settings.update(sub)
                files += subfiles
            continue
        settings[key] = value
    return settings, files


def postgresql_config_paths(config_dir: str, version: str | None, cluster: str) -> tuple[list[str], list[str]]:
    """``/etc/postgresql/<version>/<cluster>/`` (conf.d, pg_hba.conf, ...) and the files postgresql.conf names.

    Paths named by the configuration are relative to the data directory, as
    the server reads them; those outside the cluster's directory (certificates
    and keys in /etc/ssl, an hba_file elsewhere) are added, those missing are
    reported as warnings.
    """
    if version:
        versions = [version]
    else:
        try:
            versions = sorted((v for v in os.listdir(config_dir) if os.path.isdir(os.path.join(config_dir, v, cluster))),
                              key=lambda v: (len(v), v))
        except OSError:
            versions = []
    clusters = [os.path.join(config_dir, v, cluster) for v in versions]
    if not clusters or not all(os.path.isdir(c) for c in clusters):
        raise ConfigError(f"no PostgreSQL configuration for cluster {cluster!r} under {config_dir} "
                          f"({'version ' + version if version else 'any version'}): set pg_version/pg_cluster/"
                          "pg_config_dir (pg_lsclusters lists the clusters).")
    paths: list[str] = []
    warnings: list[str] = []
    for version_, cdir in zip(versions, clusters):
        paths.append(cdir)
        conf = os.path.join(cdir, "postgresql.conf")
        if not os.path.isfile(conf):
            warnings.append(f"{conf} does not exist; only the directory is backed up.")
            continue
        settings, conf_files = pg_conf_settings(conf)
        data_dir = settings.get("data_directory") or f"/var/lib/postgresql/{version_}/{cluster}"
        # ALTER SYSTEM writes postgresql.auto.conf in the data directory; the
        # server reads it last, so its settings win.
        auto = os.path.join(data_dir, AUTO_CONF)
        if os.path.isfile(auto):
            auto_settings = pg_conf_settings(auto)[0]
            settings.update(auto_settings)
            conf_files.append(auto)
        elif os.path.isdir(data_dir):
            warnings.append(f"{auto} does not exist (no ALTER SYSTEM settings); it is not in the backup.")
        else:
            warnings.append(f"{auto} could not be read (data directory {data_dir} missing or not readable); "
                            "ALTER SYSTEM settings are not in the backup.")
        named = [settings[k] for k in PG_FILE_SETTINGS if settings.get(k)]
        if settings.get("ssl", "off").lower() in ("on", "true", "yes", "1"):
            named += [d for k, d in (("ssl_cert_file", "server.crt"), ("ssl_key_file", "server.key")) if not settings.get(k)]
        for value in named:
            path = norm(value if os.path.isabs(value) else os.path.join(data_dir, value))
            if under(path, cdir) or path in paths:
                continue
            if os.path.exists(path):
                paths.append(path)
            else:
                warnings.append(f"{path} (named in {conf}) does not exist; it is not in the backup.")
        paths += [norm(f) for f in conf_files if not under(norm(f), cdir) and norm(f) not in paths]
    return paths, warnings
