# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lifecycle engine without a server: canonical form, validation, cost traps, planning, degrading.

The S3 paths no local server can produce (a server refusing only noncurrent
transitions, AWS's read-after-write delay) run against a small fake client.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import botocore.exceptions
import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle as lc
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config

CFG = S3Config(bucket="bkt")


def declared(**rule: Any) -> dict[str, Any]:
    return lc.normalise_declared({"id": "r", **rule})


# --------------------------------------------------------------------------
# canonical form


@pytest.mark.parametrize("raw", [
    {"ID": "r", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 3}},
    {"ID": "r", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 3}},
    {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 3}},
    {"ID": "r", "Status": "Enabled", "Filter": {"And": {"Prefix": ""}}, "Expiration": {"Days": 3}},
    {"ID": "r", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 3, "ExpiredObjectDeleteMarker": False}},
])
def test_every_spelling_of_a_whole_bucket_filter_is_the_same_rule(raw: dict[str, Any]) -> None:
    assert lc.normalise_s3(raw) == {"id": "r", "status": "enabled", "expiration_days": 3}
    assert lc.normalise_s3(raw) == declared(expiration_days=3) == declared(filter={"prefix": ""}, expiration_days=3)


def test_single_member_and_filter_equals_the_plain_filter() -> None:
    one_tag = {"ID": "r", "Status": "Disabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Expiration": {"Days": 1}}
    and_tag = {"ID": "r", "Status": "Disabled", "Filter": {"And": {"Tags": [{"Key": "k", "Value": "v"}]}},
               "Expiration": {"Days": 1}}
    assert lc.normalise_s3(one_tag) == lc.normalise_s3(and_tag) == declared(
        status="disabled", filter={"tags": {"k": "v"}}, expiration_days=1)


def test_transitions_are_sorted_and_storage_classes_upper_case() -> None:
    mine = declared(transitions=[{"days": 90, "storage_class": "glacier"}, {"days": 30, "storage_class": "Standard_IA"}])
    theirs = lc.normalise_s3({"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "Transitions": [
        {"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": "GLACIER"}]})
    assert mine == theirs
    assert [t["storage_class"] for t in mine["transitions"]] == ["STANDARD_IA", "GLACIER"]


def test_tag_order_and_value_types_do_not_matter() -> None:
    assert declared(filter={"tags": {"b": 2, "a": "x"}}, expiration_days=1) == \
        declared(filter={"tags": {"a": "x", "b": "2"}}, expiration_days=1)


def test_a_different_value_is_a_different_rule() -> None:
    assert declared(expiration_days=3) != declared(expiration_days=4)
    assert declared(filter={"prefix": "a/"}, expiration_days=3) != declared(filter={"prefix": "b/"}, expiration_days=3)
    assert declared(filter={"object_size_greater_than": 0}, expiration_days=3) != declared(expiration_days=3)


FULL_RULES = [
    declared(filter={"prefix": "p/", "tags": {"k": "v", "j": "w"}, "object_size_greater_than": 10,
                     "object_size_less_than": 99},
             transitions=[{"days": 0, "storage_class": "INTELLIGENT_TIERING"}, {"days": 40, "storage_class": "GLACIER"}],
             expiration_days=400),
    declared(filter={"object_size_less_than": 5}, noncurrent_transitions=[
        {"days": 30, "storage_class": "STANDARD_IA", "newer_versions": 2}, {"days": 60, "storage_class": "GLACIER"}],
        noncurrent_expiration_days=100, noncurrent_newer_versions=3),
    declared(filter={"prefix": "x"}, expired_object_delete_marker=True, abort_incomplete_multipart_days=2),
    declared(status="disabled", filter={"tags": {"only": "one"}}, expiration_days=1),
    declared(filter={"object_size_greater_than": 0}, expiration_days=1),
]


@pytest.mark.parametrize("rule", FULL_RULES)
def test_to_s3_and_back_is_lossless(rule: dict[str, Any]) -> None:
    assert lc.normalise_s3(lc.to_s3(rule)) == rule


def test_filters_use_the_narrowest_spelling() -> None:
    assert lc.to_s3(declared(expiration_days=1))["Filter"] == {"Prefix": ""}
    assert lc.to_s3(declared(filter={"prefix": "p/"}, expiration_days=1))["Filter"] == {"Prefix": "p/"}
    assert lc.to_s3(declared(filter={"tags": {"k": "v"}}, expiration_days=1))["Filter"] == {"Tag": {"Key": "k", "Value": "v"}}
    assert lc.to_s3(declared(filter={"prefix": "p/", "tags": {"k": "v"}}, expiration_days=1))["Filter"] == {
        "And": {"Prefix": "p/", "Tags": [{"Key": "k", "Value": "v"}]}}


def test_server_only_parts_are_kept_and_compared() -> None:
    raw = {"ID": "r", "Status": "Enabled", "Filter": {}, "Expiration": {"Date": datetime.datetime(2030, 1, 1)},
           "Transitions": [{"Date": datetime.datetime(2029, 1, 1), "StorageClass": "GLACIER"}],
           "FutureThing": {"X": 1}}
    rule = lc.normalise_s3(raw)
    assert rule["expiration_date"] == "2030-01-01"
    assert rule["transitions"] == [{"date": "2029-01-01", "storage_class": "GLACIER"}]
    assert rule["unmodelled"] == {"FutureThing": {"X": 1}}
    back = lc.to_s3(rule)
    assert back["Expiration"] == {"Date": "2030-01-01"} and back["FutureThing"] == {"X": 1}


# --------------------------------------------------------------------------
# validation


def errors_of(*rules: dict[str, Any]) -> list[str]:
    return lc.validate([lc.normalise_declared(r) for r in rules])


def test_a_valid_declaration_has_no_errors() -> None:
    assert lc.validate([dict(rule, id=f"r{i}") for i, rule in enumerate(FULL_RULES)]) == []
    assert lc.validate(lc.seed_preset(CFG)) == []


@pytest.mark.parametrize(("rule", "expected"), [
    ({"transitions": [{"days": 30, "storage_class": "DEEP_ARCHIVE"}, {"days": 60, "storage_class": "GLACIER"}]},
     "S3 only moves objects to colder classes"),
    ({"transitions": [{"days": 30, "storage_class": "GLACIER"}, {"days": 30, "storage_class": "DEEP_ARCHIVE"}]},
     "two transitions on day 30"),
    ({"transitions": [{"days": 29, "storage_class": "STANDARD_IA"}]}, "S3 refuses STANDARD_IA before day 30"),
    ({"transitions": [{"days": 30, "storage_class": "ONEZONE_IA"}, {"days": 59, "storage_class": "GLACIER"}]},
     "move it to day 60 or later"),
    ({"transitions": [{"days": 30, "storage_class": "GLACIER"}], "expiration_days": 30},
     "expiration_days on day 30 is not after the last transition"),
    ({"transitions": [{"days": -1, "storage_class": "GLACIER"}]}, "needs days as a whole number >= 0"),
    ({"transitions": [{"days": 1, "storage_class": "STANDARD"}]}, "'STANDARD' is not one S3 can move objects to"),
    ({"noncurrent_transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]},
     "noncurrent transition to STANDARD_IA after 10 noncurrent days"),
    ({"noncurrent_transitions": [{"days": 40, "storage_class": "GLACIER"}], "noncurrent_expiration_days": 20},
     "noncurrent_expiration_days on day 20 is not after the last noncurrent transition"),
    ({"noncurrent_transitions": [{"days": 40, "storage_class": "GLACIER", "newer_versions": 0}]},
     "newer_versions must be 1 to 100"),
    ({"noncurrent_newer_versions": 2, "expiration_days": 1}, "only applies with noncurrent_expiration_days"),
    ({"noncurrent_expiration_days": 5, "noncurrent_newer_versions": 101}, "noncurrent_newer_versions must be 1 to 100"),
    ({"expiration_days": 0}, "expiration_days must be a whole number >= 1"),
    ({"abort_incomplete_multipart_days": 0}, "abort_incomplete_multipart_days must be a whole number >= 1"),
    ({"filter": {"object_size_greater_than": 5}, "abort_incomplete_multipart_days": 1},
     "cannot be used with a object size filter"),
    ({"filter": {"tags": {"k": "v"}}, "expired_object_delete_marker": True},
     "expired_object_delete_marker cannot be used with a tags filter"),
    ({"filter": {"object_size_greater_than": -1}, "expiration_days": 1}, "whole number of bytes >= 0"),
    ({"filter": {"tags": {"": "v"}}, "expiration_days": 1}, "needs a key of 1-128"),
    ({"status": "paused", "expiration_days": 1}, "status must be enabled or disabled"),
    ({}, "has no action"),
    ({"id": "", "expiration_days": 1}, "a rule has an empty id"),
    ({"id": "x" * 256, "expiration_days": 1}, "is 256 characters; S3 allows 255"),
])
def test_each_mistake_is_named_with_its_fix(rule: dict[str, Any], expected: str) -> None:
    errors = errors_of({"id": "r", **rule})
    assert any(expected in e for e in errors), errors


def test_all_problems_are_reported_at_once_and_nothing_is_planned() -> None:
    with pytest.raises(ConfigError) as err:
        lc.declared_rules([{"id": "a"}, {"id": "b", "expiration_days": 0}], None, CFG)
    assert "rule 'a' has no action" in str(err.value) and "rule 'b': expiration_days" in str(err.value)
    assert str(err.value).startswith("invalid lifecycle rules, nothing was changed:")


def test_rule_count_limit() -> None:
    rules = [{"id": f"r{i}", "expiration_days": 1} for i in range(lc.MAX_RULES)]
    assert errors_of(*rules) == []
    assert "S3 allows at most 1000" in errors_of(*rules, {"id": "one-more", "expiration_days": 1})[0]


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        lc.declared_rules([], "nope", CFG)


# --------------------------------------------------------------------------
# cost traps


def test_leaving_archive_classes_early_is_warned_not_refused() -> None:
    rules = [declared(transitions=[{"days": 0, "storage_class": "GLACIER"}, {"days": 60, "storage_class": "DEEP_ARCHIVE"}],
                      expiration_days=200)]
    assert lc.validate(rules) == []
    warnings = lc.cost_warnings(rules)
    assert len(warnings) == 2
    assert "60 days in GLACIER (day 0 to 60, then moved on to DEEP_ARCHIVE)" in warnings[0]
    assert "charged 30 days more" in warnings[0]
    assert "140 days in DEEP_ARCHIVE" in warnings[1] and "180 days" in warnings[1]


def test_long_enough_stays_and_open_ended_rules_cost_nothing_extra() -> None:
    assert lc.cost_warnings([declared(transitions=[{"days": 0, "storage_class": "GLACIER"},
                                                   {"days": 90, "storage_class": "DEEP_ARCHIVE"}],
                                      expiration_days=270)]) == []
    assert lc.cost_warnings([declared(transitions=[{"days": 1, "storage_class": "DEEP_ARCHIVE"}])]) == []


def test_noncurrent_timeline_is_checked_too() -> None:
    warnings = lc.cost_warnings([declared(noncurrent_transitions=[{"days": 30, "storage_class": "STANDARD_IA"}],
                                          noncurrent_expiration_days=40)])
    assert warnings == ["rule 'r': noncurrent objects stay 10 days in STANDARD_IA (day 30 to 40, then expired), but "
                        "STANDARD_IA bills at least 30 days: each object is charged 20 days more than it is stored."]


# --------------------------------------------------------------------------
# the seed's policy


def test_seed_preset_is_the_seed_schedule() -> None:
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
    fake = FakeS3(rules=[lc.to_s3(declared(id="old", expiration_days=1))], refuse=("Transitions",))
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


# --------------------------------------------------------------------------
# bucket spec


@pytest.mark.parametrize(("params", "expected"), [
    ({"object_lock": True, "versioning": False}, "object_lock needs versioning"),
    ({"default_retention": {"mode": "GOVERNANCE", "days": 1}}, "default_retention needs object_lock: true"),
    ({"object_lock": True, "default_retention": {"mode": "GOVERNANCE"}}, "exactly one of days or years"),
    ({"object_lock": True, "default_retention": {"mode": "GOVERNANCE", "days": 0}}, "days must be >= 1"),
    ({"encryption": "DES"}, "must be AES256 or aws:kms"),
])
def test_bucket_spec_errors(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        lc.BucketSpec.from_params(params)


def test_object_lock_implies_versioning() -> None:
    spec = lc.BucketSpec.from_params({"object_lock": True, "default_retention": {"mode": "compliance", "years": 1}})
    assert spec.wants_versioning is True
    assert lc.wanted_bucket(spec) == {"exists": True, "versioning": True, "object_lock": True,
                                      "default_retention": {"mode": "COMPLIANCE", "years": 1}}
    assert lc.BucketSpec.from_params(None) is None
