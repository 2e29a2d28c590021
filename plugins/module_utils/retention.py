# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which complete backups to delete: a pure function of manifests, policy and clock."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, newest_first

# Complete backups of each kind kept whatever their dates (like Barman's minimum_redundancy): a clock far
# ahead, or a schedule that stopped, never thins a store below this.
DEFAULT_MIN_COUNT = 3


def clock_behind(manifests: list[Manifest], now: dt.datetime) -> Manifest | None:
    """The newest backup recorded as started after ``now``, if any.

    Either the clock went back, or that backup was made while the clock was
    ahead: in both cases dates cannot be trusted to say what is old.
    """
    future = [m for m in manifests if m.started > now]
    return newest_first(future)[0] if future else None


def to_delete(manifests: list[Manifest], now: dt.datetime, keep_days: dict[str, int | None],
              min_count: int = 1) -> list[Manifest]:
    """Backups older than their kind's window, per (location, type, database or file set, kind).

    Only complete backups (parsed manifests written by this tool) ever reach
    this function. The ``min_count`` newest backups of each group (at least
    one) are always kept, whatever their age, so a stopped schedule or a clock
    far ahead never empties the store. Nothing at all is deleted when a backup
    started after ``now`` (``clock_behind``). A kind whose window is 0 or None
    is kept forever.
    """
    if clock_behind(manifests, now) is not None:
        return []
    keep = max(1, min_count)
    groups: dict[tuple[str, str, str, str], list[Manifest]] = defaultdict(list)
    for manifest in manifests:
        groups[(manifest.location, manifest.source_type, manifest.name, manifest.kind)].append(manifest)
    doomed: list[Manifest] = []
    for key, group in sorted(groups.items()):
        kind = key[-1]
        days = keep_days.get(kind)
        if not days:
            continue
        cutoff = now - dt.timedelta(days=days)
        doomed.extend(m for m in newest_first(group)[keep:] if m.started < cutoff)
    return doomed
