# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest, the physical engine: its runner, its configuration as we read it, and the shared options.

pgBackRest does the hard parts (parallel asynchronous WAL archiving to S3,
full/differential/incremental backups, retention, restore); the
``doctorq.backup.pgbackrest`` role writes its configuration
(``roles/pgbackrest/templates/pgbackrest.conf.j2``) and this file drives it:
one command at a time, as the database OS user, with its errors explained.

Secrets: the repository key, secret and cipher passphrase live in the
pgBackRest configuration file (0640, owned by the database OS user, because
PostgreSQL's ``archive_command`` must read them); never argv, logs or results.

pgBackRest always runs as the database OS user (through procs' ``user=``, so
``setpriv`` when we are root): it must own what it writes in the data
directory and the spool.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
from typing import Any, Sequence

from ansible_collections.doctorq.backup.plugins.module_utils import procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, PgBackRestError
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import StanzaInfo

DEFAULT_CONFIG = "/etc/pgbackrest/pgbackrest.conf"
DEFAULT_USER = "postgres"
# Run logs and lock of the pgBackRest jobs (pgbackrest_backup, pg_pitr_restore, doctorq-pgbackrest): one
# directory, so a backup and a recovery of one stanza share their lock.
DEFAULT_LOG_DIR = "/var/lib/doctorq-backup/pgbackrest"


def pgbackrest_argument_spec() -> dict[str, Any]:
    """Options shared by every module that drives pgBackRest (doc fragment ``doctorq.backup.pgbackrest``)."""
    return dict(
        stanza=dict(type="str", default="main"),
        pgbackrest_config=dict(type="path", default=DEFAULT_CONFIG),
        pgbackrest_user=dict(type="str", default=DEFAULT_USER),
    )


def log_dir_argument_spec() -> dict[str, Any]:
    """``log_dir`` of the pgBackRest jobs (their run logs and lock), its old name ``backup_dir`` read until 1.0.0."""
    return dict(log_dir=dict(type="path", default=DEFAULT_LOG_DIR, aliases=["backup_dir"], deprecated_aliases=[
        dict(name="backup_dir", version="1.0.0", collection_name="doctorq.backup")]))


def metrics_label(stanza: str, kind: str | None = None) -> str:
    """The metrics' ``database`` label of a stanza: ``pgbackrest/<stanza>[/<kind>]``."""
    return f"pgbackrest/{stanza}" + (f"/{kind}" if kind else "")


def read_conf(path: str) -> configparser.ConfigParser:
    """Parse pgbackrest.conf (an ini file; a repeated key keeps its last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"pgBackRest configuration {path} does not exist: apply the doctorq.backup.pgbackrest role "
                          "or set pgbackrest_config.") from None
    except PermissionError:
        raise ConfigError(f"cannot read the pgBackRest configuration {path}: run as root (become: true) or as the "
                          "database OS user.") from None
    except configparser.Error as exc:
        raise ConfigError(f"pgBackRest configuration {path} cannot be parsed: {exc}.") from None
    return parser


def repo_location(config: str, stanza: str) -> str | None:
    """``s3://bucket/path`` of the stanza's repository, from the configuration (None when unreadable)."""
    try:
        conf = read_conf(config)
    except ConfigError:
        return None

    def get(key: str) -> str | None:
        for section in (stanza, "global"):
            if conf.has_option(section, key):
                return conf.get(section, key)
        return None
    if get("repo1-type") != "s3" or not get("repo1-s3-bucket"):
        return get("repo1-path")
    return f"s3://{get('repo1-s3-bucket')}/{(get('repo1-path') or '').strip('/')}"


def tool_env() -> dict[str, str]:
    """A small, predictable environment for the programs we run: C locale, UTC, no inherited PG*/PGBACKREST_*."""
    return {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}


_HINTS = (
    ("[055]", "the stanza or its repository is missing: run stanza-create (the pgbackrest role does)"),
    ("[082]", "WAL is not reaching the repository: check archive_mode/archive_command and run pgbackrest check"),
    ("[087]", "archive_mode/archive_command are not set for pgBackRest: apply the pgbackrest role"),
    ("[075]", "no backup is old enough for that target: list backups and the recoverable window with pg_backup_info"),
    ("[056]", "PostgreSQL is not reachable for pgBackRest: check pg1-path/pg1-port/pg1-socket-path"),
    ("[038]", "PostgreSQL is still running: stop it before restoring into its data directory"),
    ("[040]", "the target directory is not empty: restore into an empty directory (or use delta on the live one)"),
    ("[028]", "the repository belongs to another cluster (system id): check repo path and stanza"),
    ("[049]", "permission denied: pgBackRest runs as the database OS user, which must own the paths"),
    ("SignatureDoesNotMatch", "the repository secret key does not match the access key: check the secret"),
    ("InvalidAccessKeyId", "the repository access key is unknown to the server: check the key"),
    ("403", "the repository credentials are wrong or lack permission: check the key and secret"),
    ("HostConnectError", "the S3 endpoint cannot be reached: check the endpoint, port and TLS"),
    ("TLS", "TLS failed: check the endpoint's certificate (CA file) or repo1-storage-verify-tls"),
)


class PgBackRest:
    """Runs pgBackRest commands for one stanza as the database OS user."""

    def __init__(self, config: str = DEFAULT_CONFIG, stanza: str = "main", user: str = DEFAULT_USER, *,
                 binary: str | None = None) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", stanza or ""):
            raise ConfigError(f"stanza {stanza!r} is not a pgBackRest stanza name (letters, digits, _ . -).")
        self.config, self.stanza, self.user = config, stanza, user
        self.binary = binary or shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
        if not os.access(self.binary, os.X_OK):
            raise ConfigError("pgbackrest is not installed: apply the doctorq.backup.pgbackrest role "
                              "(apt-get install pgbackrest).")

    def argv(self, command: str, *options: str, params: Sequence[str] = ()) -> list[str]:
        """pgBackRest's own argv; ``run`` starts it as the database OS user."""
        # JSON output must stay clean: info logs errors to stderr only; the others log progress to stdout
        levels = (["--log-level-console=off", "--log-level-stderr=error"] if command == "info"
                  else ["--log-level-console=info", "--log-level-stderr=off"])
        return [self.binary, f"--config={self.config}", f"--stanza={self.stanza}", *levels, *options, command, *params]

    def run(self, command: str, *options: str, params: Sequence[str] = (), timeout: float = 24 * 3600,
            check: bool = True) -> procs.Done:
        """Run one command as the database OS user; on failure raise PgBackRestError with its ERROR lines and a hint."""
        argv = self.argv(command, *options, params=params)
        try:
            done = procs.run(argv, env=tool_env(), user=self.user, timeout=timeout, check=False, name="pgbackrest")
        except procs.ProcessFailed as exc:  # it could not start, or ran past its deadline (and was killed)
            raise PgBackRestError(f"pgbackrest {command} for stanza {self.stanza!r}: {exc}") from None
        if check and done.status != 0:
            raise PgBackRestError(self.explain(command, done), code=done.status)
        return done

    def explain(self, command: str, done: procs.Done) -> str:
        text = done.stdout + "\n" + done.stderr
        errors = [line.split("ERROR:", 1)[1].strip() for line in text.splitlines() if "ERROR:" in line]
        detail = "; ".join(errors[:3]) or " ".join(text.split())[-400:] or "no output"
        hint = next((h for key, h in _HINTS if key in text), "see pgBackRest's log in its log-path")
        return (f"pgbackrest {command} for stanza {self.stanza!r} failed (exit {done.status}): {detail}. "
                f"What to do: {hint}.")

    @staticmethod
    def progress(done: procs.Done) -> list[str]:
        """pgBackRest's INFO/WARN lines worth a run log line (not the option dump of 'command begin')."""
        lines = []
        for line in (done.stdout + "\n" + done.stderr).splitlines():
            match = re.search(r"\b(INFO|WARN|ERROR):\s+(.*)$", line)
            if match and "command begin" not in match.group(2):
                lines.append(f"{match.group(1)}: {match.group(2)}" if match.group(1) != "INFO" else match.group(2))
        return lines

    # -- commands ------------------------------------------------------------
    def info(self) -> StanzaInfo:
        proc = self.run("info", "--output=json", timeout=600)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise PgBackRestError(f"pgbackrest info printed no JSON: {proc.stdout[:200]!r}") from None
        info = StanzaInfo.parse(data, self.stanza)
        if info.status_code in (1, 3, 99):
            # 1 missing stanza path, 3 missing stanza data, 99 other (the repository could not be read)
            text = info.repo_error or info.status
            code = re.search(r"<Code>([^<]+)</Code>", text)
            detail = text.splitlines()[0] + (f" ({code.group(1)})" if code else "")
            hint = next((h for key, h in _HINTS if key in text), None)
            if hint is None:
                hint = ("create the stanza (pgbackrest stanza-create; the pgbackrest role does)" if info.status_code in (1, 3)
                        else "check the repository settings in " + self.config)
            raise PgBackRestError(f"pgbackrest info for stanza {self.stanza!r}: {info.status} - {detail}. What to do: {hint}.",
                                  code=info.status_code)
        return info

    def check(self) -> list[str]:
        """Switches WAL and waits until it is archived: proves archiving works end to end."""
        return self.progress(self.run("check", timeout=900))

    def archive_get(self, segment: str, dest: str) -> bool:
        """Fetch one WAL segment; False when the repository does not have it."""
        done = self.run("archive-get", params=(segment, dest), timeout=600, check=False)
        if done.status == 0:
            return True
        if done.status == 1:  # pgBackRest: segment not found
            return False
        raise PgBackRestError(self.explain("archive-get", done), code=done.status)
