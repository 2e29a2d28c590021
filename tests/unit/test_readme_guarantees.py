"""Every test the README's Guarantees table names exists: a promise without its test cannot slip in."""
from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def guarantees() -> list[tuple[str, list[str]]]:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("\n## Guarantees\n", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`tests/"):
            rows.append((cells[0], re.findall(r"`(tests/[^`:]+)::(\w+)`", cells[1])))
    return rows


def test_every_guarantee_names_tests_that_exist():
    rows = guarantees()
    assert len(rows) >= 25
    for promise, tests in rows:
        assert tests, promise
        for path, name in tests:
            with open(os.path.join(REPO, path), encoding="utf-8") as handle:
                assert re.search(rf"^def {name}\(", handle.read(), re.M), f"{promise}: {path}::{name} is missing"
