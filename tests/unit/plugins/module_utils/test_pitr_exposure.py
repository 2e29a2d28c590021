"""A PITR drill's honest RPO: the newest archived commit's age at the drill's start, 0 when nothing committed since."""
from __future__ import annotations

import datetime as dt

from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_exposure import Exposure, next_xid
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import ArchivedCommit

UTC = dt.timezone.utc
START = dt.datetime(2026, 11, 27, 14, 0, 0, tzinfo=UTC)
COMMIT = ArchivedCommit(START - dt.timedelta(seconds=90, microseconds=500000), 728, "000000010000000000000006")


class FakeSql:
    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def query(self, text: str, db: str | None = None) -> list[dict]:
        self.asked.append(text)
        if isinstance(self.answer, Exception):
            raise self.answer
        return [{"next_xid": self.answer}]


def test_exposure_is_the_age_of_the_newest_archived_commit():
    exposure = Exposure(START, COMMIT, next_xid=800)  # transactions 729..799 since: not in the archive
    assert exposure.age == exposure.seconds == 90.5 and not exposure.idle
    assert "90.5s" in exposure.describe() and "000000010000000000000006" in exposure.describe()
    assert exposure.summary()["newest_archived_xid"] == 728 and exposure.summary()["seconds"] == 90.5


def test_an_idle_cluster_loses_nothing():
    idle = Exposure(START, COMMIT, next_xid=729)
    assert idle.idle and idle.seconds == 0.0 and idle.age == 90.5
    assert idle.describe().startswith("0s: nothing committed since")
    # 64-bit IDs of the live server (epoch 3) against pg_waldump's 32-bit ones
    assert Exposure(START, COMMIT, next_xid=3 * 2 ** 32 + 729).idle


def test_without_the_live_server_or_an_xid_the_age_stands():
    assert Exposure(START, COMMIT).seconds == 90.5
    assert "not asked" in Exposure(START, COMMIT).describe()
    assert Exposure(START, ArchivedCommit(COMMIT.at, None), next_xid=729).seconds == 90.5
    # a commit newer than the start (archived while measuring) is no lag
    assert Exposure(START, ArchivedCommit(START + dt.timedelta(seconds=1), 9)).seconds == 0.0


def test_no_archived_commit_and_no_backup_leaves_the_exposure_unknown():
    unknown = Exposure(START, None, next_xid=5)
    assert unknown.seconds is None and unknown.age is None and not unknown.idle
    assert unknown.describe().startswith("unknown")


def test_a_backup_newer_than_every_archived_commit_is_the_recoverable_point():
    # right after a backup the newest segments hold its checkpoint and backup-end records, no commit
    ended = START - dt.timedelta(seconds=30)
    after_backup = Exposure(START, None, next_xid=5, backup_end=ended)
    assert after_backup.seconds == 30.0 and "backup's end" in after_backup.describe()
    assert after_backup.summary()["newest_backup_end"] is not None
    assert Exposure(START, COMMIT, next_xid=800, backup_end=ended).seconds == 30.0
    # an older backup does not hide a newer archived commit
    assert Exposure(START, COMMIT, next_xid=800, backup_end=START - dt.timedelta(hours=1)).seconds == 90.5


def test_next_xid_reads_the_snapshot_and_never_assigns_one():
    sql = FakeSql("12884902617")
    assert next_xid(sql) == 12884902617
    assert "txid_current_snapshot" in sql.asked[0] and "txid_current()" not in sql.asked[0]
    assert next_xid(FakeSql(PgError("permission denied"))) is None
    assert next_xid(None) is None
