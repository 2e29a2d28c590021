# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional libraries (psycopg2, boto3): each imported in one guard, its absence said one way.

A module that lacks one fails after argument parsing with ``missing_required_lib``
(ansible_glue.require_libs); the engine, which the scheduled job runs too, raises
its own error type with the same advice (``Library.require``).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Library:
    """An optional library: what to install when it is missing, and why it could not be imported (None: it is there)."""

    name: str
    pip: str
    error: Optional[ImportError] = None

    @property
    def present(self) -> bool:
        return self.error is None

    def require(self, error_type: type[Exception], purpose: str = "") -> None:
        """Raise ``error_type`` naming what to install, when the library is missing."""
        if self.error is not None:
            raise error_type(f"{self.name} is required{purpose} but cannot be imported ({self.error}): "
                             f"pip install {self.pip} on the host.")


def optional(name: str, pip: str, *submodules: str) -> tuple[Optional[ModuleType], Library]:
    """``name`` imported with its ``submodules`` (``psycopg2.extensions``...), or None; and the Library saying which."""
    try:
        module = importlib.import_module(name)
        for sub in submodules:
            importlib.import_module(f"{name}.{sub}")
    except ImportError as exc:  # pragma: no cover - exercised only without the library
        return None, Library(name, pip, exc)
    return module, Library(name, pip)
