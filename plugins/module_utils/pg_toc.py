# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup's table of contents, and the part of it a partial restore takes: pure, no I/O.

``parse`` reads what ``pg_restore --list --verbose`` prints (one entry a
line, ``;\\tdepends on: ...`` under it); ``select`` picks the entries that
restore some tables and/or schemas, for ``pg_restore --use-list``.

What comes along with a table: its definition and data, its schema when it
is not ``public``, the sequences it owns (serial, identity) or names in a
column default, with their values, its column defaults, indexes,
primary-key, unique and check constraints, triggers, rules, policies,
comments and grants. With a schema: every object in it, and the same for
its tables. An entry that also needs something not restored (a foreign key
to a table left out, a trigger whose function lives elsewhere, a view over
other tables) is left out and named in ``Selection.skipped``, never
half-created. Types, functions and extensions a table needs from outside
the chosen schemas are not taken: ``pg_restore`` then fails and names them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

# pg_dump's entry kinds ("desc") that hold a space; the longest is matched first.
MULTIWORD = sorted((
    "TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "CHECK CONSTRAINT", "DEFAULT ACL",
    "MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "FOREIGN TABLE", "ROW SECURITY", "INDEX ATTACH", "TABLE ATTACH",
    "LARGE OBJECT", "BLOB METADATA", "EVENT TRIGGER", "FOREIGN DATA WRAPPER", "USER MAPPING", "SHELL TYPE",
    "PROCEDURAL LANGUAGE", "ACCESS METHOD", "OPERATOR CLASS", "OPERATOR FAMILY", "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA", "DATABASE PROPERTIES", "SECURITY LABEL", "STATISTICS DATA",
), key=len, reverse=True)
# What a restored table brings along, when everything it depends on is restored too.
COMPANIONS = frozenset((
    "TABLE DATA", "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "DEFAULT", "CONSTRAINT", "CHECK CONSTRAINT",
    "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TABLE ATTACH", "TRIGGER", "RULE", "POLICY", "ROW SECURITY",
    "COMMENT", "ACL", "SECURITY LABEL", "STATISTICS", "STATISTICS DATA",
))
# What a chosen table's own definition needs first, taken with it.
NEEDED = frozenset(("SCHEMA", "SEQUENCE"))
ENTRY = re.compile(r"^(\d+); \d+ \d+ (.*)$")
DEPENDS = re.compile(r"^;\s*depends on:((?: \d+)*)\s*$")


@dataclasses.dataclass
class Entry:
    """One line of the list: ``namespace`` is ``-`` for objects outside any schema."""

    id: int
    desc: str
    namespace: str
    tag: str
    line: str
    deps: list[int] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        where = "" if self.namespace == "-" else f"{self.namespace}."
        return f"{self.desc} {where}{self.tag}"


def parse(listing: str) -> list[Entry]:
    """The entries of a ``pg_restore -l -v`` listing, in its order, with their dependencies.

    Fields are separated by single spaces and not quoted, so a namespace is
    read as the longest schema name of the listing that fits, and the owner
    as the last word.
    """
    raw: list[tuple[int, str, str, list[int]]] = []
    for line in listing.splitlines():
        entry, depends = ENTRY.match(line), DEPENDS.match(line)
        if entry:
            raw.append((int(entry.group(1)), entry.group(2), line, []))
        elif depends and raw:
            raw[-1][3].extend(int(d) for d in depends.group(1).split())
    split = [_desc(text) for _id, text, _line, _deps in raw]
    declared = {_without_owner(rest)[2:] for desc, rest in split if desc == "SCHEMA" and rest.startswith("- ")}
    schemas = {"public", "pg_catalog"} | declared
    names = sorted(schemas, key=len, reverse=True)
    entries = []
    for (number, _text, line, deps), (desc, rest) in zip(raw, split):
        body = _without_owner(rest)
        namespace = "-" if body.startswith("- ") else next(
            (s for s in names if body.startswith(s + " ")), body.split(" ", 1)[0])
        entries.append(Entry(number, desc, namespace, body[len(namespace) + 1:], line, deps))
    return entries


def _desc(text: str) -> tuple[str, str]:
    for desc in MULTIWORD:
        if text.startswith(desc + " "):
            return desc, text[len(desc) + 1:]
    desc, _sep, rest = text.partition(" ")
    return desc, rest


def _without_owner(rest: str) -> str:
    return rest.rsplit(" ", 1)[0] if " " in rest else rest


@dataclasses.dataclass
class Selection:
    """What a partial restore takes: entry ids, the tables (schema, name) restored, what was left out and why."""

    ids: list[int]
    tables: list[tuple[str, str]]
    skipped: list[str]


def table_candidates(name: str) -> list[tuple[str, str]]:
    """``schema.table`` split at each dot (either part may hold one), or ``table`` in public."""
    splits = [(name[:i], name[i + 1:]) for i, char in enumerate(name) if char == "." and 0 < i < len(name) - 1]
    return splits + [("public", name)]


def missing_message(toc: list[Entry], missing: list[str], backup: str) -> str:
    """Names what is not in the backup and what it has (a few names, the closest first)."""
    tables = [f"{e.namespace}.{e.tag}" for e in toc if e.desc == "TABLE"]
    schemas = sorted({e.tag for e in toc if e.desc == "SCHEMA"} | {e.namespace for e in toc if e.namespace != "-"})
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name.split(" ", 1)[1], tables + schemas, n=1)
        if close:
            hints.append(f"{name}: did you mean {close[0]}?")
    few = ", ".join(tables[:8]) + (f", ... ({len(tables)} in all)" if len(tables) > 8 else "")
    return (f"not in backup {backup}: {', '.join(missing)}. " + (" ".join(hints) + " " if hints else "")
            + f"The backup has the tables {few or 'none'} and the schemas {', '.join(schemas) or 'none'}. "
            "Nothing was created. Name tables as schema.table (or table, in public).")


def select(toc: list[Entry], tables: list[str], schemas: list[str]) -> tuple[Selection, list[str]]:
    """The entries restoring ``tables`` and ``schemas``; second, what the backup lacks (empty when all is there)."""
    by_id = {e.id: e for e in toc}
    missing: list[str] = []
    chosen: set[int] = set()
    anchors: set[int] = set()  # what companions attach to: tables (and sequences) restored, chosen schemas
    for name in tables:
        found = [e for schema, table in table_candidates(name) for e in toc
                 if e.desc == "TABLE" and e.namespace == schema and e.tag == table][:1]
        if not found:
            missing.append(f"table {name}")
        chosen.update(e.id for e in found)
    for schema in schemas:
        inside = [e for e in toc if e.namespace == schema or (e.desc == "SCHEMA" and e.tag == schema)]
        if not inside:
            missing.append(f"schema {schema}")
        anchors.update(e.id for e in inside if e.desc in ("SCHEMA", "TABLE"))
    if missing:
        return Selection([], [], []), missing
    chosen |= anchors
    for number in list(chosen):  # a table's own definition needs its schema and the sequences it names
        chosen.update(d for d in by_id[number].deps if d in by_id and by_id[d].desc in NEEDED)
    in_schemas = {e.id for e in toc if e.namespace in schemas}
    while True:
        anchors = {n for n in chosen if by_id[n].desc != "SCHEMA" or by_id[n].tag in schemas}
        more = {e.id for e in toc if e.id not in chosen and _ready(e, chosen, by_id)
                and (e.id in in_schemas or (e.desc in COMPANIONS and anchors & set(e.deps)))}
        if not more:
            break
        chosen |= more
    anchors = {n for n in chosen if by_id[n].desc != "SCHEMA" or by_id[n].tag in schemas}
    skipped = []
    for e in toc:
        # a companion is the restored table's own when that table comes first (pg_dump lists the owner first)
        if e.id not in chosen and (e.id in in_schemas or (e.desc in COMPANIONS and e.deps[:1] and e.deps[0] in anchors)):
            lacking = [by_id[d].label if d in by_id else f"entry {d}" for d in e.deps if d not in chosen]
            skipped.append(f"{e.label} (needs {', '.join(lacking)}, not restored)")
    ordered = [e for e in toc if e.id in chosen]
    return Selection([e.id for e in ordered], [(e.namespace, e.tag) for e in ordered if e.desc == "TABLE"],
                     skipped), []


def _ready(entry: Entry, chosen: set[int], by_id: dict[int, Entry]) -> bool:
    """Everything ``entry`` depends on is restored (for OWNED BY, the table owning the sequence too)."""
    if not set(entry.deps) <= chosen:
        return False
    return entry.desc != "SEQUENCE OWNED BY" or all(set(by_id[d].deps) <= chosen for d in entry.deps)


def use_list(toc: list[Entry], selection: Selection) -> str:
    """The ``pg_restore --use-list`` file: the chosen lines in the archive's order (a piped archive reads forward only)."""
    ids = set(selection.ids)
    return "".join(e.line + "\n" for e in toc if e.id in ids)
