# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lifecycle rule model without a server: canonical form, validation, cost traps."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle_rules as lc


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


def test_rule_count_limit() -> None:
    rules = [{"id": f"r{i}", "expiration_days": 1} for i in range(lc.MAX_RULES)]
    assert errors_of(*rules) == []
    assert "S3 allows at most 1000" in errors_of(*rules, {"id": "one-more", "expiration_days": 1})[0]


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
