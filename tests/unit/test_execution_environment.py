"""The execution environment's definition and the collection's EE metadata agree with the engine and the README.

ansible-builder reads meta/execution-environment.yml from an installed
collection (paths relative to the collection's root) and builds
ee/execution-environment.yml. The PostgreSQL client major version the EE
installs is written in three places (meta/bindep.txt, the definition's PATH,
the README) and must be at least the newest server major the collection is
tested with: the engine refuses client tools older than the server (pg.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from ansible_builder._target_scripts import introspect
from ansible_builder.ee_schema import validate_schema

REPO = Path(__file__).resolve().parents[2]


def _bindep() -> list[str]:
    return [line.split("#")[0].strip() for line in (REPO / "meta/bindep.txt").read_text(encoding="utf-8").splitlines()
            if line.split("#")[0].strip()]


def _client_major() -> int:
    majors = [int(m.group(1)) for line in _bindep() if (m := re.fullmatch(r"postgresql(\d+) \[platform:rpm\]", line))]
    assert len(majors) == 1, _bindep()
    return majors[0]


def test_builder_reads_the_collections_requirements():
    python, system = introspect.process_collection(str(REPO))
    assert {re.split(r"[<>=]", p)[0] for p in python} == {"boto3", "psycopg2-binary"}, python
    assert all(re.search(r"[<>=]=?\d", p) for p in python), python  # versions bounded like requirements-dev.txt
    assert system == _bindep()


def test_bindep_names_every_program_the_engine_runs():
    names = {line.split()[0] for line in _bindep()}
    # pipeline.py (zstd, pigz or gzip), tarstream.py (GNU tar), procs.py (setpriv: util-linux), pgbackrest.py
    assert {"zstd", "pigz", "gzip", "tar", "util-linux", "pgbackrest"} <= names, names
    assert "postgresql-client [platform:dpkg]" in _bindep()  # a Debian base gets its own client


def test_definition_is_valid_and_installs_the_collection():
    definition = yaml.safe_load((REPO / "ee/execution-environment.yml").read_text(encoding="utf-8"))
    validate_schema(definition)  # raises on a definition ansible-builder 3 would refuse
    assert definition["version"] == 3
    assert definition["dependencies"]["galaxy"]["collections"][0]["type"] == "file"
    core = definition["dependencies"]["ansible_core"]["package_pip"]
    dev = (REPO / "requirements-dev.txt").read_text(encoding="utf-8")
    assert core in dev.splitlines(), (core, "the EE's ansible-core is the one the collection is tested with")


def test_client_major_is_the_same_everywhere_and_dumps_the_tested_servers():
    major = _client_major()
    text = (REPO / "ee/execution-environment.yml").read_text(encoding="utf-8")
    assert f"ENV PATH=/usr/pgsql-{major}/bin:$PATH" in text
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"PostgreSQL {major} client tools" in readme
    tested = [int(v) for v in re.findall(r"PostgreSQL (\d+)", readme.split("Tested with:", 1)[1].split("\n\n", 1)[0])]
    assert tested and major >= max(tested), (major, tested)
