# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One exception family for the engine.

Every message says what failed, where, and what to do next, and never carries
a secret: modules turn these into ``fail_json`` and the CLI into an exit code.
"""

from __future__ import annotations


class DoctorqError(Exception):
    """An error the user can act on; ``code`` is what the failing side answered, when it said (S3's, pgBackRest's)."""

    def __init__(self, msg: str, code: str | int | None = None) -> None:
        super().__init__(msg)
        self.code = code


class ConfigError(DoctorqError):
    """Bad options: nothing was touched."""


class PgError(DoctorqError):
    """PostgreSQL or its client tools refused or failed."""


class StorageError(DoctorqError):
    """The local directory or the S3 store refused or failed; ``code``: S3's error code (``NoSuchKey``...)."""


class IntegrityError(DoctorqError):
    """Bytes do not match their recorded checksums."""


class LockBusy(DoctorqError):
    """Another run holds the lock for the same target."""


class PgBackRestError(DoctorqError):
    """pgBackRest refused or failed; the message carries its ERROR lines and what to check; ``code``: its exit code."""
