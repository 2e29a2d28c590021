# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every backup job's policy: compression, weekly copies, retention, logs and notifications.

The options (``policy_argument_spec``, doc fragment ``doctorq.backup.policy``),
their checks before any work (``check_policy``) and what they mean
(``JobPolicy``), for the database and the file-set backups alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.notify import Notifier, notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.retention import DEFAULT_MIN_COUNT

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
LEVELS = {"zstd": (1, 19), "gzip": (1, 9), "none": (0, 0)}


def check_policy(params: dict[str, Any]) -> None:
    """Retention windows and compression level and threads, as pg_backup checks them (before any work)."""
    for name in ("retention_daily_days", "retention_weekly_days"):
        if params.get(name) is not None and params[name] < 0:
            raise ConfigError(f"{name} must be 0 (keep forever) or a number of days.")
    if params.get("retention_min_count") is not None and params["retention_min_count"] < 1:
        raise ConfigError(f"retention_min_count {params['retention_min_count']} is below 1: the newest backup of each "
                          "kind is always kept, so use 1 or more (the number of backups kept whatever their dates).")
    if (params.get("compression_threads") or 0) < 0:
        raise ConfigError(f"compression_threads {params['compression_threads']} is negative: use 0 (one thread per "
                          "core) or the number of threads the compressor may use.")
    if params.get("compression_level") is not None:
        low, high = LEVELS[params.get("compression") or "zstd"]
        if not low <= params["compression_level"] <= high:
            raise ConfigError(f"compression_level {params['compression_level']} is out of range for "
                              f"{params.get('compression')}: use {low} to {high}.")


def policy_argument_spec() -> dict[str, Any]:
    """Compression, weekly copies, retention, logs and notifications: every backup job's policy."""
    return dict(
        compression=dict(type="str", choices=list(pipeline.COMPRESSIONS)),  # not given: zstd (see JobPolicy)
        compression_level=dict(type="int"),
        compression_threads=dict(type="int", default=0),
        weekly=dict(type="str", default="auto", choices=["auto", "always", "never"]),
        weekly_day=dict(type="str", default="sunday", choices=list(WEEKDAYS)),
        retention_daily_days=dict(type="int", default=30),
        retention_weekly_days=dict(type="int", default=365),
        retention_min_count=dict(type="int", default=DEFAULT_MIN_COUNT),
        prune=dict(type="bool", default=True),
        log_dir=dict(type="path"),
        **notify_argument_spec(),
    )


@dataclasses.dataclass(frozen=True)
class JobPolicy:
    """What the policy options (``policy_argument_spec``) mean: the ``policy`` field of every backup job that has them.

    BackupJob and files_backup_job.FilesJob hold one each (``job.policy``).
    """

    compression: str = "zstd"
    compression_given: bool = True  # False: the default, which a directory backup may change (backup.py)
    compression_level: int | None = None
    compression_threads: int = 0
    weekly: str = "auto"
    weekly_day: str = "sunday"
    retention_daily_days: int = 30
    retention_weekly_days: int = 365
    retention_min_count: int = DEFAULT_MIN_COUNT
    prune: bool = True
    notifier: Notifier = Notifier()
    log_dir: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "JobPolicy":
        """The policy of a job, from module or CLI parameters (checked first: check_policy)."""
        check_policy(params)
        return cls(
            compression=params.get("compression") or "zstd", compression_given=params.get("compression") is not None,
            compression_level=params.get("compression_level"),
            compression_threads=params.get("compression_threads") or 0,
            weekly=params.get("weekly") or "auto", weekly_day=params.get("weekly_day") or "sunday",
            retention_daily_days=params.get("retention_daily_days", 30),
            retention_weekly_days=params.get("retention_weekly_days", 365),
            retention_min_count=params.get("retention_min_count") or DEFAULT_MIN_COUNT,
            prune=params.get("prune", True), notifier=Notifier.from_params(params), log_dir=params.get("log_dir"),
        )

    @property
    def keep_days(self) -> dict[str, int | None]:
        return {"daily": self.retention_daily_days, "weekly": self.retention_weekly_days}

    def weekly_due(self, started: dt.datetime) -> bool:
        if self.weekly == "always":
            return True
        return self.weekly == "auto" and WEEKDAYS[started.astimezone().weekday()] == self.weekly_day

    @property
    def extension(self) -> str:
        """The compressor's file-name extension (``.zst``, ``.gz``, or none)."""
        return pipeline.EXTENSIONS[self.compression]

    @property
    def level(self) -> int:
        """The compression level the manifest records: the one given, or the compressor's default."""
        return self.compression_level if self.compression_level is not None else pipeline.DEFAULT_LEVELS[self.compression]

    def compressor(self) -> list[str] | None:
        return pipeline.compressor_argv(self.compression, self.compression_level, self.compression_threads)
