# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Applying a lifecycle declaration without a server: preset, declaration, planning, degrading.

The S3 paths no local server can produce (a server refusing only noncurrent
transitions, AWS's read-after-write delay) run against a small fake client.
"""

from __future__ import annotations

import copy
from typing import Any

import botocore.exceptions
import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle as lc
from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle_rules as rules_model
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config

CFG = S3Config(bucket="bkt")


def declared(**rule: Any) -> dict[str, Any]:
    return rules_model.normalise_declared({"id": "r", **rule})


# --------------------------------------------------------------------------
# the declaration


def test_all_problems_are_reported_at_once_and_nothing_is_planned() -> None:
    with pytest.raises(ConfigError) as err:
        lc.declared_rules([{"id": "a"}, {"id": "b", "expiration_days": 0}], None, CFG)
    assert "rule 'a' has no action" in str(err.value) and "rule 'b': expiration_days" in str(err.value)
    assert str(err.value).startswith("invalid lifecycle rules, nothing was changed:")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        lc.declared_rules([], "nope", CFG)


# --------------------------------------------------------------------------
# the seed's policy


def test_seed_preset_is_the_seed_schedule() -> None:
    assert rules_model.validate(lc.seed_preset(CFG)) == []
    rules = {r["id"]: r for r in lc.seed_preset(CFG)}
    assert sorted(rules) == ["doctorq-postgresql-abort-multipart", "doctorq-postgresql-daily-data",
                             "doctorq-postgresql-daily-meta", "doctorq-postgresql-weekly-data",
                             "doctorq-postgresql-weekly-meta"]
    daily, weekly = rules["doctorq-postgresql-daily-data"], rules["doctorq-postgresql-weekly-data"]
    # Standard: last 7 days; Glacier: days 8-30; Deep Archive: after 30 days
    assert daily["transitions"] == [{"days": 7, "storage_class": "GLACIER"}]
    assert weekly["transitions"] == [{"days": 7, "storage_class": "GLACIER"}, {"days": 30, "storage_class": "DEEP_ARCHIVE"}]
    # dailies kept 30 days, weeklies one year
    assert daily["expiration_days"] == rules["doctorq-postgresql-daily-meta"]["expiration_days"] == 30
    assert weekly["expiration_days"] == rules["doctorq-postgresql-weekly-meta"]["expiration_days"] == 365
    assert "transitions" not in rules["doctorq-postgresql-daily-meta"]
    assert daily["filter"] == {"prefix": "postgresql/",
                               "tags": {"doctorq-backup-kind": "daily", "doctorq-backup-part": "data"}}
    # the kind tag, not the weekly/ folder, tells weeklies apart: a parent prefix covers every host below it
    assert weekly["filter"] == {"prefix": "postgresql/",
                                "tags": {"doctorq-backup-kind": "weekly", "doctorq-backup-part": "data"}}
    assert rules["doctorq-postgresql-abort-multipart"] == {
        "id": "doctorq-postgresql-abort-multipart", "status": "enabled", "filter": {"prefix": "postgresql/"},
        "abort_incomplete_multipart_days": 7}


def test_seed_preset_without_a_prefix() -> None:
    rules = {r["id"]: r for r in lc.seed_preset(S3Config(bucket="b", prefix=""))}
    assert "prefix" not in rules["doctorq-daily-data"]["filter"]
    assert "prefix" not in rules["doctorq-weekly-data"]["filter"]
    assert "filter" not in rules["doctorq-abort-multipart"]


# --------------------------------------------------------------------------
# planning


SERVER = [
    {"ID": "b", "Status": "Enabled", "Prefix": "b/", "Expiration": {"Days": 2}},  # legacy spelling
    {"ID": "a", "Status": "Enabled", "Filter": {"Prefix": "a/"}, "Expiration": {"Days": 1}},
]


def test_plan_ignores_order_and_spelling() -> None:
    wanted = [declared(id="b", filter={"prefix": "b/"}, expiration_days=2),
              declared(id="a", filter={"prefix": "a/"}, expiration_days=1)]
    plan = lc.make_plan(SERVER, wanted, purge=True)
    assert not plan.changed
    assert plan.changes() == {"added": [], "removed": [], "modified": []}


def test_purge_removes_and_merge_keeps_undeclared_rules() -> None:
    wanted = [declared(id="a", filter={"prefix": "a/"}, expiration_days=5), declared(id="c", expiration_days=3)]
    purge = lc.make_plan(SERVER, wanted, purge=True)
    assert purge.changes() == {"added": ["c"], "removed": ["b"], "modified": ["a"]}
    assert [r["id"] for r in purge.after] == ["a", "c"]
    merge = lc.make_plan(SERVER, wanted, purge=False)
    assert merge.changes() == {"added": ["c"], "removed": [], "modified": ["a"]}
    assert [r["id"] for r in merge.after] == ["a", "b", "c"]


def test_untouched_rules_are_written_back_in_the_servers_own_spelling() -> None:
    plan = lc.make_plan(SERVER, [declared(id="c", expiration_days=3)], purge=False)
    written = {r["ID"]: r for r in plan.s3_rules()}
    assert written["b"] == SERVER[0]  # legacy top-level Prefix kept verbatim
    assert written["c"] == {"ID": "c", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 3}}


def test_strip_features_leaves_out_actions_and_empty_rules() -> None:
    rules = [declared(id="keep", transitions=[{"days": 1, "storage_class": "GLACIER"}], expiration_days=10),
             declared(id="gone", transitions=[{"days": 1, "storage_class": "GLACIER"}]),
             declared(id="nc", noncurrent_transitions=[{"days": 1, "storage_class": "GLACIER"}],
                      noncurrent_expiration_days=5)]
    kept, left_out = lc.strip_features(rules, ["transitions"])
    assert [r["id"] for r in kept] == ["keep", "nc"]
    assert "transitions" not in kept[0] and kept[1]["noncurrent_transitions"]
    assert left_out == [{"rule": "keep", "left_out": "transitions", "detail": "GLACIER after 1 days"},
                        {"rule": "gone", "left_out": "transitions", "detail": "GLACIER after 1 days"},
                        {"rule": "gone", "left_out": "rule", "detail": "nothing the server supports is left in it"}]


# --------------------------------------------------------------------------
# S3 paths no local server produces


class FakeS3:
    """Holds one lifecycle document; refuses features it is told to; can lag reads."""

    def __init__(self, rules: list[dict[str, Any]] | None = None, refuse: tuple[str, ...] = (),
                 stale_reads: int = 0) -> None:
        self.rules = copy.deepcopy(rules)
        self.refuse = refuse
        self.stale_reads = stale_reads
        self.previous: list[dict[str, Any]] | None = None
        self.puts: list[list[dict[str, Any]]] = []

    @staticmethod
    def _error(code: str, status: int, op: str) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)

    def get_bucket_lifecycle_configuration(self, Bucket: str) -> dict[str, Any]:  # noqa: N803 (boto3 spelling)
        rules = self.rules
        if self.stale_reads and self.puts:  # lag only after a write, as AWS does
            self.stale_reads -= 1
            rules = self.previous
        if rules is None:
            raise self._error("NoSuchLifecycleConfiguration", 404, "GetBucketLifecycleConfiguration")
        return {"Rules": copy.deepcopy(rules)}

    def put_bucket_lifecycle_configuration(self, Bucket: str, LifecycleConfiguration: dict[str, Any]) -> None:  # noqa: N803
        rules = LifecycleConfiguration["Rules"]
        if any(key in rule for rule in rules for key in self.refuse):
            raise self._error("NotImplemented", 501, "PutBucketLifecycleConfiguration")
        self.puts.append(copy.deepcopy(rules))
        self.previous, self.rules = self.rules, copy.deepcopy(rules)


WANT = [declared(id="x", transitions=[{"days": 1, "storage_class": "GLACIER"}], expiration_days=100),
        declared(id="y", noncurrent_transitions=[{"days": 1, "storage_class": "GLACIER"}],
                 noncurrent_expiration_days=100)]


def test_warn_leaves_out_only_what_the_server_refuses() -> None:
    """A server refusing only noncurrent transitions keeps the current-version ones."""
    fake = FakeS3(refuse=("NoncurrentVersionTransitions",))
    out = lc.ensure_lifecycle(fake, CFG, WANT, on_unsupported="warn", sleep=lambda _s: None)
    assert out.changed
    assert out.unsupported == [{"rule": "y", "left_out": "noncurrent_transitions", "detail": "GLACIER after 1 days"}]
    held = {r["ID"]: r for r in fake.rules}
    assert held["x"]["Transitions"] == [{"Days": 1, "StorageClass": "GLACIER"}]
    assert "NoncurrentVersionTransitions" not in held["y"]


def test_warn_tries_both_features_when_each_alone_is_not_enough() -> None:
    fake = FakeS3(refuse=("Transitions", "NoncurrentVersionTransitions"))
    out = lc.ensure_lifecycle(fake, CFG, WANT, on_unsupported="warn", sleep=lambda _s: None)
    assert {u["left_out"] for u in out.unsupported} == {"transitions", "noncurrent_transitions"}
    assert len(fake.puts) == 1


def test_warn_gives_up_when_nothing_degradable_helps() -> None:
    fake = FakeS3(refuse=("Expiration",))
    with pytest.raises(StorageError, match="even without storage class transitions"):
        lc.ensure_lifecycle(fake, CFG, WANT, on_unsupported="warn", sleep=lambda _s: None)
    assert fake.rules is None


def test_fail_mode_names_the_features_and_changes_nothing() -> None:
    fake = FakeS3(rules=[rules_model.to_s3(declared(id="old", expiration_days=1))], refuse=("Transitions",))
    with pytest.raises(StorageError) as err:
        lc.ensure_lifecycle(fake, CFG, WANT, sleep=lambda _s: None)
    assert err.value.code == "NotImplemented"
    assert "storage class transitions in rule 'x'; noncurrent version transitions in rule 'y'" in str(err.value)
    assert fake.puts == []


def test_other_errors_are_not_mistaken_for_unsupported() -> None:
    class Denied(FakeS3):
        def put_bucket_lifecycle_configuration(self, Bucket: str, LifecycleConfiguration: dict[str, Any]) -> None:  # noqa: N803
            raise self._error("AccessDenied", 403, "PutBucketLifecycleConfiguration")

    with pytest.raises(StorageError) as err:
        lc.ensure_lifecycle(Denied(), CFG, WANT, on_unsupported="warn", sleep=lambda _s: None)
    assert err.value.code == "AccessDenied"


def test_read_after_write_delay_is_polled_then_accepted() -> None:
    sleeps: list[float] = []
    fake = FakeS3(stale_reads=2)
    out = lc.ensure_lifecycle(fake, CFG, WANT, sleep=sleeps.append)
    assert out.changed and out.notes == [] and sleeps == [0.5, 1.0]


def test_a_lasting_delay_is_a_warning_not_a_failure() -> None:
    fake = FakeS3(stale_reads=99)
    out = lc.ensure_lifecycle(fake, CFG, WANT, sleep=lambda _s: None)
    assert out.changed and "propagation delay" in out.notes[0]
