"""Retention decisions: a pure function of manifests, policy and clock."""
from __future__ import annotations

import datetime as dt

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest, backup_id, iso
from ansible_collections.doctorq.backup.plugins.module_utils.retention import clock_behind, to_delete

NOW = dt.datetime(2025, 11, 7, 2, 0, tzinfo=dt.timezone.utc)
POLICY = {"daily": 30, "weekly": 365}


def manifest(days_ago: float, kind: str = "daily", db: str = "app", location: str = "local") -> Manifest:
    started = NOW - dt.timedelta(days=days_ago)
    return Manifest(id=backup_id(db, started), name=db, kind=kind, started_at=iso(started), finished_at=iso(started),
                    duration_s=1.0, file=f"{backup_id(db, started)}.dump.zst", size=1, sha256="0" * 64, md5="0" * 32,
                    compression="zstd", compression_level=3, location=location)


def ids(manifests: list[Manifest]) -> set[str]:
    return {m.id for m in manifests}


def test_dailies_older_than_window_go_weeklies_stay():
    keep = [manifest(0), manifest(29), manifest(200, "weekly")]
    old = [manifest(31), manifest(45)]
    assert ids(to_delete(keep + old, NOW, POLICY)) == ids(old)


def test_weekly_window_is_its_own():
    old_weekly = manifest(400, "weekly")
    assert ids(to_delete([manifest(1, "weekly"), old_weekly, manifest(364, "weekly")], NOW, POLICY)) == {old_weekly.id}


def test_newest_of_each_kind_is_kept_even_when_old():
    # The schedule stopped two months ago: the last backup must survive.
    newest, older = manifest(60), manifest(61)
    weekly = manifest(500, "weekly")
    assert ids(to_delete([newest, older, weekly], NOW, POLICY)) == {older.id}


def test_groups_are_per_database_and_location():
    a_old, b_only = manifest(40, db="a"), manifest(40, db="b")
    s3_only = manifest(40, location="s3")
    doomed = to_delete([manifest(1, db="a"), a_old, b_only, manifest(1), s3_only], NOW, POLICY)
    # b's only backup and the only S3 copy are the newest of their groups.
    assert ids(doomed) == {a_old.id}


def test_zero_days_keeps_forever():
    assert to_delete([manifest(1), manifest(4000)], NOW, {"daily": 0, "weekly": 365}) == []


def test_boundary_is_strict():
    exactly = manifest(30)
    assert to_delete([manifest(0), exactly], NOW, POLICY) == []


# --------------------------------------------------------------------------
# clock skew (issue 11, case 8): a minimum count, and no deletion while a backup is dated in the future


def test_min_count_keeps_that_many_of_each_group_whatever_their_age():
    dailies = [manifest(days) for days in (400, 401, 402, 403)]  # the clock a year ahead: all past the window
    weeklies = [manifest(days, "weekly") for days in (700, 800)]
    doomed = to_delete(dailies + weeklies, NOW, POLICY, min_count=3)
    assert ids(doomed) == {dailies[3].id}
    assert to_delete(dailies, NOW, POLICY, min_count=0) == to_delete(dailies, NOW, POLICY, min_count=1)  # never below 1
    assert ids(to_delete(dailies, NOW, POLICY, min_count=1)) == ids(dailies[1:])


def test_min_count_only_matters_past_the_window():
    recent = [manifest(days) for days in range(10)]  # all inside the 30-day window: the count changes nothing
    assert to_delete(recent + [manifest(40)], NOW, POLICY, min_count=3) != []
    assert to_delete(recent, NOW, POLICY, min_count=50) == []


def test_a_backup_dated_after_the_clock_stops_every_deletion():
    future = manifest(-365)  # made while the clock was a year ahead
    old = [manifest(100), manifest(200, "weekly"), manifest(400, "weekly"), manifest(50, location="s3")]
    assert clock_behind(old + [future], NOW) == future
    assert to_delete(old + [manifest(1), future], NOW, POLICY) == []
    # the same backups under the (later) clock that made them: retention works again
    later = NOW + dt.timedelta(days=366)
    assert clock_behind(old + [future], later) is None
    assert to_delete(old + [manifest(1), future], later, POLICY) != []


def test_a_backup_started_this_very_second_is_not_in_the_future():
    assert clock_behind([manifest(0)], NOW) is None
    assert clock_behind([manifest(-1 / 86400)], NOW) is not None
