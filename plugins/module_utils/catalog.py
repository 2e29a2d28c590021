# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup naming and manifests.

A manifest is the commit point of a backup: it is written last, beside the
data and its checksum files, and a backup without one is incomplete. The
catalog is whatever manifests exist; there is no second index to drift.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any

TOOL = "doctorq.backup"
TOOL_VERSION = "0.1.0"
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
KINDS = ("daily", "weekly")
# What a backup set holds: a database (the default; older manifests carry no
# type) or a set of files and directories (files.py), named <set>_files_<stamp>.tar[.zst|.gz].
TYPES = ("database", "files")
WHATS = {"database": ("full", "globals"), "files": ("files",)}
STAMP = "%Y%m%d_%H%M%S"
# <db>_full_<YYYYmmdd_HHMMSS>.dump[.zst|.gz], <db>_globals_<...>.sql[.zst|.gz] and
# <set>_files_<...>.tar[.zst|.gz], plus their .md5/.sha256/.manifest.json
# companions and hidden .partial files.
FORMAT_OF = {"full": "dump", "globals": "sql", "files": "tar"}
NAME_RE = re.compile(r"^\.?(?P<db>.+)_(?P<what>full|globals|files)_(?P<stamp>\d{8}_\d{6})\."
                     r"(?P<rest>(?:dump|sql|tar)(?:\.zst|\.gz)?(?:\.md5|\.sha256|\.manifest\.json)?(?:\.partial)?)$")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def backup_id(db: str, started: dt.datetime, what: str = "full") -> str:
    return f"{db}_{what}_{started.astimezone(dt.timezone.utc).strftime(STAMP)}"


def belongs_to(name: str, db: str, of_type: str = "database") -> bool:
    """True when ``name`` is a file this tool writes for database (or file set) ``db``.

    A database and a file set may share a name and a directory: each only
    ever claims its own files (``_full_``/``_globals_`` vs ``_files_...tar``).
    """
    match = NAME_RE.match(name)
    if not match or match.group("db") != db or match.group("what") not in WHATS[of_type]:
        return False
    # Each part of the name has exactly one format: the old scripts' <db>_full_<stamp>.sql.gz
    # is theirs, never a leftover of ours.
    return match.group("rest").split(".", 1)[0] == FORMAT_OF[match.group("what")]


@dataclasses.dataclass
class Manifest:
    """What one backup is; JSON on disk and in S3 (see README, "Manifest")."""

    id: str
    database: str
    kind: str
    started_at: str
    finished_at: str
    duration_s: float
    file: str
    size: int
    sha256: str
    md5: str
    compression: str
    compression_level: int
    format: str = "custom"
    server_version: str = ""
    server_major: int = 0
    pg_dump_version: int = 0
    host: str = ""
    table_count: int = 0
    tables: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    globals: dict[str, Any] | None = None
    s3: dict[str, Any] | None = None
    # "files": ``database`` names the file set, ``fileset`` says what it holds
    # (count, bytes, root, paths, changed_during_backup; see files.py).
    type: str = "database"
    fileset: dict[str, Any] | None = None
    tool: str = TOOL
    tool_version: str = TOOL_VERSION
    manifest_version: int = MANIFEST_VERSION
    # Where this copy of the manifest was read from; not serialised.
    location: str = dataclasses.field(default="", compare=False)
    origin: str = dataclasses.field(default="", compare=False)

    @property
    def manifest_name(self) -> str:
        return self.file + MANIFEST_SUFFIX

    @property
    def started(self) -> dt.datetime:
        return parse_iso(self.started_at)

    def files(self) -> list[str]:
        """Every file of the set, manifest last (the order to write; delete in reverse)."""
        names = [self.file, self.file + ".md5", self.file + ".sha256"]
        if self.globals:
            names.append(self.globals["file"])
        return names + [self.manifest_name]

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data.pop("location")
        data.pop("origin")
        if data["type"] == "database":  # database manifests stay as they always were
            del data["type"], data["fileset"]
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def summary(self) -> dict[str, Any]:
        """The facts a result or a listing shows."""
        return {
            "id": self.id, "database": self.database, "kind": self.kind, "started_at": self.started_at,
            "finished_at": self.finished_at, "duration_s": self.duration_s, "file": self.file, "size": self.size,
            "sha256": self.sha256, "md5": self.md5, "table_count": self.table_count,
            "server_version": self.server_version, "location": self.location, "origin": self.origin,
            "s3_uri": (self.s3 or {}).get("uri"), "globals_file": (self.globals or {}).get("file"),
            "type": self.type, **({"fileset": self.fileset} if self.fileset is not None else {}),
        }

    @classmethod
    def from_json(cls, raw: bytes, *, location: str = "", origin: str = "") -> "Manifest | None":
        """Parse a manifest; None for anything this tool did not write or cannot read."""
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("tool") != TOOL or data.get("kind") not in KINDS:
            return None
        if data.get("type", "database") not in TYPES:
            return None  # a kind of backup this version does not know how to handle
        known = {f.name for f in dataclasses.fields(cls)} - {"location", "origin"}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
            manifest.started  # pylint: disable=pointless-statement  # validates the timestamp
        except (TypeError, ValueError):
            return None
        manifest.location, manifest.origin = location, origin
        return manifest


def checksum_line(digest_hex: str, name: str) -> bytes:
    """One line as md5sum/sha256sum write it, so ``md5sum -c`` accepts the file."""
    return f"{digest_hex}  {name}\n".encode("utf-8")


def newest_first(manifests: list[Manifest]) -> list[Manifest]:
    return sorted(manifests, key=lambda m: (m.started_at, m.kind), reverse=True)
