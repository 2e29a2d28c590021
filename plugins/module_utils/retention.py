# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which complete backups to delete: a pure function of manifests, policy and clock."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, newest_first


def to_delete(manifests: list[Manifest], now: dt.datetime, keep_days: dict[str, int | None]) -> list[Manifest]:
    """Backups older than their kind's window, per (location, type, database or file set, kind).

    Only complete backups (parsed manifests written by this tool) ever reach
    this function. The newest backup of each database and kind is always
    kept, whatever its age, so a stopped schedule never empties the store.
    A kind whose window is 0 or None is kept forever.
    """
    groups: dict[tuple[str, str, str, str], list[Manifest]] = defaultdict(list)
    for manifest in manifests:
        groups[(manifest.location, manifest.type, manifest.database, manifest.kind)].append(manifest)
    doomed: list[Manifest] = []
    for key, group in sorted(groups.items()):
        kind = key[-1]
        days = keep_days.get(kind)
        if not days:
            continue
        cutoff = now - dt.timedelta(days=days)
        doomed.extend(m for m in newest_first(group)[1:] if m.started < cutoff)
    return doomed
