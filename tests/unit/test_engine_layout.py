"""The engine's layout as docs/DESIGN.md states it: every file listed with its layer, every import pointing down."""
from __future__ import annotations

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE = os.path.join(REPO, "plugins", "module_utils")
PACKAGE = "ansible_collections.doctorq.backup.plugins.module_utils"


def documented() -> dict[str, int]:
    """file stem -> layer, from the engine table of docs/DESIGN.md."""
    with open(os.path.join(REPO, "docs", "DESIGN.md"), encoding="utf-8") as handle:
        text = handle.read()
    table = text.split("## Engine (`plugins/module_utils/`)", 1)[1].split("\n## ", 1)[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^\| `(\w+)\.py` \| (\d) \|", table, re.M)}


def imports() -> dict[str, set[str]]:
    """file stem -> the engine files it imports."""
    graph = {}
    for name in sorted(os.listdir(ENGINE)):
        if not name.endswith(".py") or name == "__init__.py":
            continue
        with open(os.path.join(ENGINE, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
                rest = node.module[len(PACKAGE):].lstrip(".")
                deps.update([rest.split(".")[0]] if rest else [alias.name for alias in node.names])
        graph[name[:-3]] = deps
    return graph


def test_every_engine_file_is_in_the_design_table_once():
    assert sorted(documented()) == sorted(imports())


def test_imports_point_to_the_same_layer_or_lower_and_never_in_a_circle():
    layers, graph = documented(), imports()
    upward = [f"{a} ({layers[a]}) imports {b} ({layers[b]})" for a, deps in graph.items() for b in deps
              if layers[b] > layers[a]]
    assert upward == []

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, "import circle: " + " -> ".join(path + (node,))
        for dep in graph[node]:
            visit(dep, path + (node,))

    for start in graph:
        visit(start, ())
