"""``pytest tests/unit`` runs in seconds on a machine with nothing started: no unit test asks for a server.

Tests that need PostgreSQL, SeaweedFS or moto (the fixtures of tests/conftest.py that start them) live under
tests/integration or tests/faults.
"""
from __future__ import annotations

import ast
import pathlib

SERVER_FIXTURES = {"_testbed", "pg_server", "pg_db", "seaweed", "s3_bucket", "moto_s3", "moto_bucket", "dbs"}
UNIT = pathlib.Path(__file__).resolve().parent


def test_no_unit_test_asks_for_a_server() -> None:
    asking = []
    for path in sorted(UNIT.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                wanted = {a.arg for a in node.args.args} & SERVER_FIXTURES
                if wanted:
                    asking.append(f"{path.relative_to(UNIT)}::{node.name} ({', '.join(sorted(wanted))})")
    assert not asking, "move these to tests/integration: " + "; ".join(asking)
