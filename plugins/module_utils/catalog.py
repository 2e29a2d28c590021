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
import string
import urllib.parse
from typing import Any

TOOL = "doctorq.backup"
TOOL_VERSION = "0.1.0"
# What manifests this version writes say: 3, the words of docs/DESIGN.md ("Words": ``name``, ``source_type``,
# ``contents``). ``Manifest.load`` reads 1 (one file, ``database``/``type``/``fileset``) and 2 (the same words, and the
# first with ``format: directory``); a manifest of ours with a higher version is kept and reported, never followed.
MANIFEST_VERSION = 3
DIRECTORY = "directory"  # Manifest.format of a directory backup (``<id>.dir/``); otherwise "custom", one file
MANIFEST_SUFFIX = ".manifest.json"
KINDS = ("daily", "weekly")
# What a backup set was taken of (``source_type``): a database, or a set of files and directories (fileset.py),
# named <set>_files_<stamp>.tar[.zst|.gz]. Manifests before version 3 said ``type``, "database" (or none) or "files".
SOURCE_TYPES = ("database", "file_set")
OLD_SOURCE_TYPES = {"database": "database", "files": "file_set"}
WHATS = {"database": ("full", "globals"), "file_set": ("files",)}
STAMP = "%Y%m%d_%H%M%S"
# <db>_full_<YYYYmmdd_HHMMSS>.dump[.zst|.gz], <db>_globals_<...>.sql[.zst|.gz] and
# <set>_files_<...>.tar[.zst|.gz], plus their .md5/.sha256/.manifest.json
# companions and hidden .partial files; <db> and <set> as encode_name writes them.
# A directory backup (pg_dump -Fd) is the directory <db>_full_<...>.dir (its files
# inside, compressed by pg_dump) with the same companions beside it.
FORMAT_OF = {"full": "dump", "globals": "sql", "files": "tar"}
DIR_EXT = "dir"
NAME_RE = re.compile(r"^\.?(?P<db>[^/]+)_(?P<what>full|globals|files)_(?P<stamp>\d{8}_\d{6})\."
                     r"(?P<rest>(?:(?:dump|sql|tar)(?:\.zst|\.gz)?|dir)(?:\.md5|\.sha256|\.manifest\.json)?(?:\.partial)?)$")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


# Characters a name keeps in file names and S3 keys; every other one is percent-encoded (encode_name).
NAME_SAFE = frozenset(string.ascii_letters + string.digits + "_.-")


def encode_name(name: str) -> str:
    """A database's (or file set's) name as it appears in file names, S3 keys, lock and log names.

    Any name PostgreSQL accepts must work, and a name is one path segment in
    both places: letters, digits, ``_``, ``.`` and ``-`` stay as they are (so
    existing backups keep their names), every other character becomes the
    ``%XX`` of its UTF-8 bytes (ASCII, no ``/``, reversible: ``%`` is encoded
    too), and so does a leading ``.`` (a hidden file, read as a partial) or
    ``-`` (a name must never reach a program's argv as an option). Manifests,
    results and messages carry the name itself.
    """
    return "".join(ch if ch in NAME_SAFE and not (i == 0 and ch in ".-")
                   else "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))
                   for i, ch in enumerate(name))


def decode_name(encoded: str) -> str:
    """The name ``encode_name`` encoded."""
    return urllib.parse.unquote(encoded, errors="strict")


def name_forms(db: str) -> tuple[str, ...]:
    """How file names may spell ``db``: encoded (``encode_name``), and as versions before 0.2 wrote it.

    Those wrote the name as it is (``clínica_full_...``, ``my db_full_...``),
    and their backups must stay listed and restorable; a name holding ``/``
    (which could not be backed up then) or ``%`` (which the encoded form of
    another name holds) has no such form.
    """
    encoded = encode_name(db)
    return (encoded,) if db == encoded or "/" in db or "%" in db or not db else (encoded, db)


def backup_id(db: str, started: dt.datetime, what: str = "full") -> str:
    return f"{encode_name(db)}_{what}_{started.astimezone(dt.timezone.utc).strftime(STAMP)}"


def belongs_to(name: str, db: str, source_type: str = "database") -> bool:
    """True when ``name`` is a file this tool writes for database (or file set) ``db``.

    A database and a file set may share a name and a directory: each only
    ever claims its own files (``_full_``/``_globals_`` vs ``_files_...tar``).
    """
    match = NAME_RE.match(name)
    if not match or match.group("db") not in name_forms(db) or match.group("what") not in WHATS[source_type]:
        return False
    # Each part of the name has exactly one format (a full backup two: one file, or a directory):
    # the old scripts' <db>_full_<stamp>.sql.gz is theirs, never a leftover of ours.
    fmt = match.group("rest").split(".", 1)[0]
    return fmt == FORMAT_OF[match.group("what")] or (fmt == DIR_EXT and match.group("what") == "full")


@dataclasses.dataclass
class Manifest:
    """What one backup is; JSON on disk and in S3 (see README, "Manifest")."""

    id: str
    name: str  # whose backup: the database's or the file set's own name
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
    # "file_set": ``contents`` says what it holds (count, bytes, root, paths, changed_during_backup;
    # see files_backup_job.py).
    source_type: str = "database"
    contents: dict[str, Any] | None = None
    # format "directory" only (absent from other manifests): pg_dump's --jobs, and every file of the
    # directory ({name, size, sha256, md5}; JSON key "files"); ``size`` is then their total and
    # ``sha256``/``md5`` the hashes of the ``.sha256``/``.md5`` files (one line per file).
    jobs: int = 0
    dir_files: list[dict[str, Any]] | None = None
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

    @property
    def is_directory(self) -> bool:
        return self.format == DIRECTORY

    def files(self) -> list[str]:
        """Every file of the set, manifest last (the order to write; delete in reverse).

        A directory backup's files are ``<id>.dir/<name>``: the directory
        itself is no file (the stores remove it once it is empty).
        """
        data = [f"{self.file}/{f['name']}" for f in self.dir_files or []] if self.is_directory else [self.file]
        names = data + [self.file + ".md5", self.file + ".sha256"]
        if self.globals:
            names.append(self.globals["file"])
        return names + [self.manifest_name]

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data.pop("location")
        data.pop("origin")
        if data["contents"] is None:
            del data["contents"]
        files = data.pop("dir_files")
        if self.is_directory:
            data["files"] = files
        else:
            del data["jobs"]
        data["manifest_version"] = MANIFEST_VERSION
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def summary(self) -> dict[str, Any]:
        """The facts a result or a listing shows (and, until 1.0.0, ``database``, ``type`` and ``fileset`` as before)."""
        return {
            "id": self.id, "name": self.name, "source_type": self.source_type, "kind": self.kind,
            "started_at": self.started_at,
            "finished_at": self.finished_at, "duration_s": self.duration_s, "file": self.file, "size": self.size,
            "sha256": self.sha256, "md5": self.md5, "table_count": self.table_count,
            "server_version": self.server_version, "location": self.location, "origin": self.origin,
            "s3_uri": (self.s3 or {}).get("uri"), "globals_file": (self.globals or {}).get("file"),
            **({"contents": self.contents} if self.contents is not None else {}),
            **self.old_words(),
            **({"format": self.format, "jobs": self.jobs, "file_count": len(self.dir_files or [])}
               if self.is_directory else {}),
        }

    @classmethod
    def from_json(cls, raw: bytes, *, location: str = "", origin: str = "",
                  file_name: str | None = None) -> "Manifest | None":
        """Parse a manifest; None for anything this tool did not write, cannot read, or that does not hold together."""
        try:
            return cls.load(raw, location=location, origin=origin, file_name=file_name)
        except InvalidManifest:
            return None

    @classmethod
    def load(cls, raw: bytes, *, location: str = "", origin: str = "",
             file_name: str | None = None) -> "Manifest | None":
        """Parse and validate a manifest (``file_name``: its own, when known).

        None for what is not ours (not JSON, another tool); ``InvalidManifest``
        for one that claims to be ours but does not hold together (a planted or
        damaged manifest must never make retention or clean-up follow its names
        out of the backup directory) or that a newer version wrote: its files
        are kept and reported, never taken for an interrupted run's leftovers.
        Versions 1 and 2 are read in today's words (docs/DESIGN.md, "Words").
        """
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("tool") != TOOL:
            return None
        version = data.get("manifest_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version > MANIFEST_VERSION:
            raise InvalidManifest(f"its manifest_version {version!r} is not one this version reads (1 to "
                                  f"{MANIFEST_VERSION}): a newer doctorq.backup wrote it; upgrade to list or restore "
                                  "it (its files are kept)", data.get("name", data.get("database")))
        if version < 3:
            data = _in_todays_words(data)
        problem = _schema_problem(data)
        if problem:
            raise InvalidManifest(problem, data.get("name"))
        known = {f.name for f in dataclasses.fields(cls)} - {"location", "origin", "dir_files", "jobs"}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        if manifest.is_directory:
            manifest.dir_files, manifest.jobs = data["files"], data["jobs"]
        problem = manifest.naming_problem(file_name)
        if problem:
            raise InvalidManifest(problem, manifest.name)
        manifest.location, manifest.origin = location, origin
        return manifest

    def old_words(self) -> dict[str, Any]:
        """A result's keys of before docs/DESIGN.md's "Words", returned beside today's until 1.0.0."""
        return {"database": self.name, "type": "files" if self.source_type == "file_set" else self.source_type,
                **({"fileset": self.contents} if self.contents is not None else {})}

    def naming_problem(self, file_name: str | None = None) -> str | None:
        """Why the names in this manifest do not fit each other (and its own ``file_name``), or None.

        Every name a manifest holds is one this tool derives from the database
        (or file set) and the start time, so anything else is not ours to follow.
        """
        what = WHATS[self.source_type][0]
        stamp = self.started.strftime(STAMP)
        expected_id = backup_id(self.name, self.started, what)
        if self.id not in [f"{form}_{what}_{stamp}" for form in name_forms(self.name)]:
            return f"its id {self.id!r} is not {expected_id!r}, the id of a backup of {self.name!r} started at {self.started_at}"
        problem = _data_name_problem("file", self.file, self.id, DIR_EXT if self.is_directory else FORMAT_OF[what],
                                     ("",) if self.is_directory else (".zst", ".gz", ""))
        if problem or not belongs_to(self.file, self.name, self.source_type):
            return problem or f"its file {self.file!r} is not a backup file of {self.name!r}"
        if file_name is not None and file_name != self.manifest_name:
            return f"it is named {file_name!r}, but a manifest of {self.file!r} is named {self.manifest_name!r}"
        if self.globals is not None:
            globals_id = self.id[:-len(f"_{what}_{stamp}")] + f"_globals_{stamp}"  # spelt as the id is
            problem = _data_name_problem("globals.file", self.globals["file"], globals_id, FORMAT_OF["globals"])
            if problem or self.source_type != "database" or not belongs_to(self.globals["file"], self.name):
                return problem or f"its globals.file {self.globals['file']!r} is not a globals file of {self.name!r}"
        return None


class InvalidManifest(ValueError):
    """A manifest that claims to be ours but does not hold together; the message says why.

    ``name`` is the name it claims (when it holds one), so a job can tell
    which of the manifests it ignores are about its own backups.
    """

    def __init__(self, why: str, name: Any = None) -> None:
        super().__init__(why)
        self.name = name if isinstance(name, str) else None


# field -> the JSON types it may hold (bool is no int here, None only where listed)
_SCHEMA: dict[str, tuple[type, ...]] = {
    "id": (str,), "name": (str,), "kind": (str,), "started_at": (str,), "finished_at": (str,),
    "duration_s": (int, float), "file": (str,), "size": (int,), "sha256": (str,), "md5": (str,),
    "compression": (str,), "compression_level": (int,), "format": (str,), "server_version": (str,),
    "server_major": (int,), "pg_dump_version": (int,), "host": (str,), "table_count": (int,), "tables": (list,),
    "globals": (dict, type(None)), "s3": (dict, type(None)), "source_type": (str,), "contents": (dict, type(None)),
    "tool_version": (str,), "manifest_version": (int,), "jobs": (int,), "files": (list,),
}
_REQUIRED = ("id", "name", "kind", "started_at", "finished_at", "duration_s", "file", "size", "sha256", "md5",
             "compression", "compression_level")


def _schema_problem(data: dict[str, Any]) -> str | None:
    """Why ``data`` is not a manifest's JSON (missing field, wrong type, unknown kind), or None."""
    missing = [f for f in _REQUIRED if f not in data]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for field, types in _SCHEMA.items():
        if field in data and (not isinstance(data[field], types) or isinstance(data[field], bool)):
            return f"its {field} is a {type(data[field]).__name__}, not a {' or '.join(t.__name__ for t in types)}"
    if data["kind"] not in KINDS:
        return f"its kind {data['kind']!r} is none of {', '.join(KINDS)}"
    if data.get("source_type", "database") not in SOURCE_TYPES:
        return f"its source_type {data['source_type']!r} is none of {', '.join(SOURCE_TYPES)}"
    if data["size"] < 0 or not data["name"]:
        return "its size is negative" if data["size"] < 0 else "its name is empty"
    try:
        parse_iso(data["started_at"])
    except ValueError:
        return f"its started_at {data['started_at']!r} is not a UTC time (YYYY-mm-ddTHH:MM:SSZ)"
    if data.get("globals") is not None:
        globals_ = data["globals"]
        if not isinstance(globals_.get("file"), str) or not isinstance(globals_.get("size"), int) \
                or not isinstance(globals_.get("sha256"), str):
            return "its globals lacks a file name, size or sha256"
    if data.get("format") == DIRECTORY:
        return _directory_problem(data)
    return None


def _in_todays_words(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest of version 1 or 2 in version 3's words: ``database`` -> ``name``, ``type`` -> ``source_type``
    ("files" -> "file_set"), ``fileset`` -> ``contents``. A value of the wrong type is left for the schema to name."""
    old = dict(data)
    new = {k: v for k, v in old.items() if k not in ("database", "type", "fileset")}
    if "database" in old:
        new["name"] = old["database"]
    source = old.get("type", "database")
    new["source_type"] = OLD_SOURCE_TYPES.get(source, source) if isinstance(source, str) else source
    if "fileset" in old:
        new["contents"] = old["fileset"]
    return new


def _directory_problem(data: dict[str, Any]) -> str | None:
    """Why a directory backup's manifest does not hold together (jobs, its list of files), or None."""
    if not isinstance(data.get("jobs"), int) or isinstance(data["jobs"], bool) or data["jobs"] < 1:
        return "it is a directory backup without jobs (1 or more)"
    files = data.get("files")
    if not isinstance(files, list) or not files:
        return "it is a directory backup without a list of files"
    seen = set()
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool) or entry["size"] < 0 \
                or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("md5"), str):
            return "an entry of its files lacks a name, size, sha256 or md5"
        name = entry["name"]
        if not name or "/" in name or "\0" in name or name in (".", "..") or name.startswith(".") or name in seen:
            return f"its files name {name!r}, not a plain file name (no '/', no '..', no hidden file, no repeat)"
        seen.add(name)
    if sum(f["size"] for f in files) != data["size"]:
        return "its size is not the total of its files' sizes"
    return None


def _data_name_problem(field: str, name: str, stem: str, fmt: str,
                       exts: tuple[str, ...] = (".zst", ".gz", "")) -> str | None:
    """Why ``name`` is not ``<stem>.<fmt><one of exts>``, a plain file name beside the manifest, or None."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        return f"its {field} {name!r} is not a plain file name (no '/', no '..')"
    if name not in {f"{stem}.{fmt}{ext}" for ext in exts}:
        return f"its {field} {name!r} is not {stem}.{fmt}" + ("[.zst|.gz]" if len(exts) > 1 else "")
    return None


def checksum_line(digest_hex: str, name: str) -> bytes:
    """One line as md5sum/sha256sum write it, so ``md5sum -c`` accepts the file."""
    return f"{digest_hex}  {name}\n".encode("utf-8")


def newest_first(manifests: list[Manifest]) -> list[Manifest]:
    return sorted(manifests, key=lambda m: (m.started_at, m.kind), reverse=True)
