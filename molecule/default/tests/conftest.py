"""Run these tests only against a host given with --hosts (molecule's verifier gives podman://NAME)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("hosts", default=None):
        return
    skip = pytest.mark.skip(reason="molecule scenario test: run by molecule (scripts/molecule.sh) or with --hosts=podman://NAME")
    for item in items:
        item.add_marker(skip)
