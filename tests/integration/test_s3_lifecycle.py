# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3_lifecycle against real servers: moto (full AWS lifecycle semantics) and SeaweedFS (the degraded path).

Every test follows the house pattern where it applies: check mode, real run,
verify what the server really holds (with a plain boto3 client, not the
module's own reader), run again and assert nothing changed.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import pytest

from testbed import empty_bucket

MODULE = "s3_lifecycle"

# Features both servers implement: expiration, noncurrent expiration, abort,
# prefix/tag filters (SeaweedFS answers 501 to transitions only).
PORTABLE_RULES: list[dict[str, Any]] = [
    {"id": "logs", "filter": {"prefix": "logs/"}, "expiration_days": 14},
    {"id": "tagged", "filter": {"prefix": "tmp/", "tags": {"disposable": "yes"}}, "expiration_days": 2},
    {"id": "versions", "noncurrent_expiration_days": 10},
    {"id": "uploads", "filter": {"prefix": "pg/"}, "abort_incomplete_multipart_days": 3},
]
ARCHIVE_RULES: list[dict[str, Any]] = [
    {"id": "archive", "filter": {"prefix": "pg/"},
     "transitions": [{"days": 30, "storage_class": "STANDARD_IA"}, {"days": 90, "storage_class": "GLACIER"}],
     "expiration_days": 400},
    {"id": "uploads", "filter": {"prefix": "pg/"}, "abort_incomplete_multipart_days": 3},
]
UNMANAGED = {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": "other/"}, "Expiration": {"Days": 9}}


@pytest.fixture(params=["moto", "seaweed"])
def server_bucket(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], Any]:
    """(server name, s3 option, boto3 client) for a fresh bucket on each server."""
    if request.param == "moto":
        return "moto", request.getfixturevalue("moto_bucket"), request.getfixturevalue("moto_s3").client()
    return "seaweed", request.getfixturevalue("s3_bucket"), request.getfixturevalue("seaweed").client()


@pytest.fixture
def moto(moto_bucket: dict[str, Any], moto_s3: Any) -> tuple[dict[str, Any], Any]:
    return moto_bucket, moto_s3.client()


def server_rules(client: Any, bucket: str) -> list[dict[str, Any]] | None:
    """The raw rules the server holds, sorted by id; None when it has no lifecycle configuration."""
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return None
        raise
    return sorted(rules, key=lambda r: r["ID"])


def by_id(rules: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {r["ID"]: r for r in rules or []}


def assert_ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


# --------------------------------------------------------------------------
# both servers: the core declarative cycle


def test_create_then_rerun_is_a_noop(run_module, server_bucket) -> None:
    _name, s3, client = server_bucket
    first = assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES}))
    assert first["changed"] is True
    assert first["changes"] == {"added": ["logs", "tagged", "uploads", "versions"], "removed": [], "modified": []}

    held = by_id(server_rules(client, s3["bucket"]))
    assert set(held) == {"logs", "tagged", "uploads", "versions"}
    assert held["logs"]["Expiration"] == {"Days": 14}
    assert held["tagged"]["Filter"] == {"And": {"Prefix": "tmp/", "Tags": [{"Key": "disposable", "Value": "yes"}]}}
    assert held["versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 10
    assert held["uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}

    # same declaration, rules and tags in another order: nothing to do
    again = assert_ok(run_module(MODULE, {"s3": s3, "rules": list(reversed(PORTABLE_RULES))}))
    assert again["changed"] is False
    assert again["changes"] == {"added": [], "removed": [], "modified": []}
    assert by_id(server_rules(client, s3["bucket"])) == held


def test_check_mode_touches_nothing_and_predicts_changed(run_module, server_bucket) -> None:
    _name, s3, client = server_bucket
    predicted = assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES}, check_mode=True))
    assert predicted["changed"] is True
    assert [r["id"] for r in predicted["rules"]] == ["logs", "tagged", "uploads", "versions"]
    assert server_rules(client, s3["bucket"]) is None

    real = assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES}))
    assert real["rules"] == predicted["rules"]
    held = server_rules(client, s3["bucket"])

    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES}, check_mode=True))["changed"] is False
    changed = copy.deepcopy(PORTABLE_RULES)
    changed[0]["expiration_days"] = 21
    predicted = assert_ok(run_module(MODULE, {"s3": s3, "rules": changed}, check_mode=True))
    assert predicted["changed"] is True
    assert predicted["changes"]["modified"] == ["logs"]
    assert server_rules(client, s3["bucket"]) == held


def test_purge_removes_an_unmanaged_rule(run_module, server_bucket) -> None:
    _name, s3, client = server_bucket
    client.put_bucket_lifecycle_configuration(Bucket=s3["bucket"], LifecycleConfiguration={"Rules": [UNMANAGED]})
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES[:1]}))
    assert result["changed"] is True
    assert result["changes"] == {"added": ["logs"], "removed": ["someone-elses"], "modified": []}
    assert list(by_id(server_rules(client, s3["bucket"]))) == ["logs"]


def test_merge_mode_keeps_other_rules_verbatim(run_module, server_bucket) -> None:
    _name, s3, client = server_bucket
    client.put_bucket_lifecycle_configuration(Bucket=s3["bucket"], LifecycleConfiguration={"Rules": [UNMANAGED]})
    unmanaged_before = by_id(server_rules(client, s3["bucket"]))["someone-elses"]

    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES[:2], "purge": False}))
    assert result["changed"] is True
    assert result["changes"] == {"added": ["logs", "tagged"], "removed": [], "modified": []}
    held = by_id(server_rules(client, s3["bucket"]))
    assert set(held) == {"logs", "tagged", "someone-elses"}
    assert held["someone-elses"] == unmanaged_before

    # merge replaces by id: changing one declared rule leaves the other two alone
    changed = copy.deepcopy(PORTABLE_RULES[:1])
    changed[0]["expiration_days"] = 15
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": changed, "purge": False}))
    assert result["changes"] == {"added": [], "removed": [], "modified": ["logs"]}
    held = by_id(server_rules(client, s3["bucket"]))
    assert held["logs"]["Expiration"] == {"Days": 15}
    assert set(held) == {"logs", "tagged", "someone-elses"}
    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": changed, "purge": False}))["changed"] is False


def test_diff_shows_rules_before_and_after(run_module, server_bucket) -> None:
    _name, s3, _client = server_bucket
    assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES[:1]}))
    changed = [dict(PORTABLE_RULES[0], expiration_days=30), PORTABLE_RULES[2]]
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": changed}, diff=True))
    assert result["diff"]["before"] == {"rules": [
        {"id": "logs", "status": "enabled", "filter": {"prefix": "logs/"}, "expiration_days": 14}]}
    assert result["diff"]["after"] == {"rules": [
        {"id": "logs", "status": "enabled", "filter": {"prefix": "logs/"}, "expiration_days": 30},
        {"id": "versions", "status": "enabled", "noncurrent_expiration_days": 10}]}
    assert "diff" not in run_module(MODULE, {"s3": s3, "rules": changed})


def test_empty_declaration_with_purge_deletes_the_configuration(run_module, server_bucket) -> None:
    _name, s3, client = server_bucket
    assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES}))
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": []}))
    assert result["changed"] is True and result["rules"] == []
    assert server_rules(client, s3["bucket"]) is None
    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": []}))["changed"] is False


def test_ensure_bucket_creates_and_converges(run_module, request, server_bucket) -> None:
    name, s3, client = server_bucket
    fresh = dict(s3, bucket=f"t-ensure-{name}-{secrets.token_hex(4)}")
    spec = {"versioning": True, "encryption": "AES256", "object_lock": True,
            "default_retention": {"mode": "GOVERNANCE", "days": 1}}
    args = {"s3": fresh, "ensure_bucket": spec, "rules": PORTABLE_RULES[:1]}

    predicted = assert_ok(run_module(MODULE, args, check_mode=True, diff=True))
    assert predicted["changed"] is True and predicted["bucket"]["created"] is True
    assert predicted["diff"]["before"]["bucket"] == {"exists": False}
    assert [r["id"] for r in predicted["rules"]] == ["logs"]
    assert fresh["bucket"] not in [b["Name"] for b in client.list_buckets()["Buckets"]]

    request.addfinalizer(lambda: empty_bucket(client, fresh["bucket"]))
    result = assert_ok(run_module(MODULE, args))
    assert result["changed"] is True
    assert result["bucket"]["created"] is True
    assert result["bucket"]["state"] == {"exists": True, "versioning": True, "encryption": "AES256",
                                         "object_lock": True,
                                         "default_retention": {"mode": "GOVERNANCE", "days": 1}}
    assert client.get_bucket_versioning(Bucket=fresh["bucket"])["Status"] == "Enabled"
    lock = client.get_object_lock_configuration(Bucket=fresh["bucket"])["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"
    sse = client.get_bucket_encryption(Bucket=fresh["bucket"])["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert list(by_id(server_rules(client, fresh["bucket"]))) == ["logs"]

    again = assert_ok(run_module(MODULE, args))
    assert again["changed"] is False and again["bucket"]["actions"] == []

    # Object Lock can never be turned off: refused before any change
    refused = run_module(MODULE, {"s3": fresh, "ensure_bucket": {"object_lock": False}, "rules": PORTABLE_RULES[:1]})
    assert refused["failed"] and "can never be disabled" in refused["msg"]


def test_ensure_bucket_changes_versioning_of_an_existing_bucket(run_module, server_bucket) -> None:
    _name, s3, client = server_bucket
    args = {"s3": s3, "ensure_bucket": {"versioning": True}, "rules": PORTABLE_RULES[:1]}
    assert assert_ok(run_module(MODULE, args, check_mode=True))["bucket"]["actions"] == ["versioning"]
    assert client.get_bucket_versioning(Bucket=s3["bucket"]).get("Status") is None
    result = assert_ok(run_module(MODULE, args))
    assert result["bucket"] == {"created": False, "actions": ["versioning"],
                                "state": {"exists": True, "versioning": True}}
    assert client.get_bucket_versioning(Bucket=s3["bucket"])["Status"] == "Enabled"
    assert assert_ok(run_module(MODULE, args))["changed"] is False


def test_missing_bucket_without_ensure_bucket_fails_with_a_hint(run_module, server_bucket) -> None:
    _name, s3, _client = server_bucket
    result = run_module(MODULE, {"s3": dict(s3, bucket=f"t-absent-{secrets.token_hex(4)}"), "rules": PORTABLE_RULES})
    assert result["failed"] is True
    assert "NoSuchBucket" in result["msg"] and "ensure_bucket" in result["msg"]


# --------------------------------------------------------------------------
# moto: transitions, normalisation, the seed's policy


def test_change_one_transition(run_module, moto) -> None:
    s3, client = moto
    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": ARCHIVE_RULES}))["changed"] is True
    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": ARCHIVE_RULES}))["changed"] is False
    uploads_before = by_id(server_rules(client, s3["bucket"]))["uploads"]

    changed = copy.deepcopy(ARCHIVE_RULES)
    changed[0]["transitions"][1]["days"] = 120
    predicted = assert_ok(run_module(MODULE, {"s3": s3, "rules": changed}, check_mode=True, diff=True))
    assert predicted["changed"] is True
    before = predicted["diff"]["before"]["rules"][0]["transitions"]
    after = predicted["diff"]["after"]["rules"][0]["transitions"]
    assert before[1] == {"days": 90, "storage_class": "GLACIER"} and after[1] == {"days": 120, "storage_class": "GLACIER"}
    assert by_id(server_rules(client, s3["bucket"]))["archive"]["Transitions"][1]["Days"] == 90

    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": changed}))
    assert result["changes"] == {"added": [], "removed": [], "modified": ["archive"]}
    held = by_id(server_rules(client, s3["bucket"]))
    assert held["archive"]["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"},
                                              {"Days": 120, "StorageClass": "GLACIER"}]
    assert held["uploads"] == uploads_before
    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": changed}))["changed"] is False


def test_other_spellings_of_the_same_rules_are_no_change(run_module, moto) -> None:
    """A configuration written by another tool (legacy Prefix, unsorted transitions) equals its declaration."""
    s3, client = moto
    client.put_bucket_lifecycle_configuration(Bucket=s3["bucket"], LifecycleConfiguration={"Rules": [
        {"ID": "archive", "Status": "Enabled", "Prefix": "pg/",
         "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}, {"Days": 30, "StorageClass": "STANDARD_IA"}],
         "Expiration": {"Days": 400}},
        {"ID": "uploads", "Status": "Enabled", "Filter": {"And": {"Prefix": "pg/"}},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
        {"ID": "everything", "Status": "Disabled", "Filter": {}, "Expiration": {"Days": 999}},
    ]})
    declared = copy.deepcopy(ARCHIVE_RULES) + [{"id": "everything", "status": "disabled", "filter": {"prefix": ""},
                                                "expiration_days": 999}]
    declared[0]["transitions"] = [{"days": 90, "storage_class": "glacier"}, {"days": 30, "storage_class": "Standard_IA"}]
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": declared}))
    assert result["changed"] is False, result["changes"]


def test_seed_preset_round_trips_and_matches_the_seed_schedule(run_module, moto) -> None:
    s3, client = moto
    assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed"}, check_mode=True))
    assert server_rules(client, s3["bucket"]) is None

    result = assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed"}))
    assert result["changed"] is True
    held = by_id(server_rules(client, s3["bucket"]))
    assert set(held) == {"doctorq-postgresql-daily-data", "doctorq-postgresql-daily-meta",
                         "doctorq-postgresql-weekly-data", "doctorq-postgresql-weekly-meta",
                         "doctorq-postgresql-abort-multipart"}

    def tags(rule: dict[str, Any]) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in rule["Filter"]["And"]["Tags"]}

    # Standard for the last 7 days, Glacier from day 8 to 30, Deep Archive after 30;
    # dailies expire after 30 days, weeklies after 365.
    daily = held["doctorq-postgresql-daily-data"]
    assert daily["Filter"]["And"]["Prefix"] == "postgresql/"
    assert tags(daily) == {"doctorq-backup-kind": "daily", "doctorq-backup-part": "data"}
    assert daily["Transitions"] == [{"Days": 7, "StorageClass": "GLACIER"}]
    assert daily["Expiration"] == {"Days": 30}
    weekly = held["doctorq-postgresql-weekly-data"]
    assert weekly["Filter"]["And"]["Prefix"] == "postgresql/weekly/"
    assert tags(weekly) == {"doctorq-backup-kind": "weekly", "doctorq-backup-part": "data"}
    assert weekly["Transitions"] == [{"Days": 7, "StorageClass": "GLACIER"}, {"Days": 30, "StorageClass": "DEEP_ARCHIVE"}]
    assert weekly["Expiration"] == {"Days": 365}
    # metadata (checksums, manifests) stays in STANDARD and goes with its data
    for kind, days in (("daily", 30), ("weekly", 365)):
        meta = held[f"doctorq-postgresql-{kind}-meta"]
        assert tags(meta) == {"doctorq-backup-kind": kind, "doctorq-backup-part": "meta"}
        assert "Transitions" not in meta and meta["Expiration"] == {"Days": days}
    assert held["doctorq-postgresql-abort-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert held["doctorq-postgresql-abort-multipart"]["Filter"] == {"Prefix": "postgresql/"}

    # the seed's Glacier stay (23 days) is below Glacier's 90-day minimum: warned, not refused
    assert any("23 days in GLACIER" in w and "90 days" in w for w in result["warnings"])
    assert len(result["cost_warnings"]) == 2

    again = assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed"}))
    assert again["changed"] is False
    assert assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed"}, check_mode=True))["changed"] is False


def test_seed_preset_follows_the_prefix_and_shares_a_bucket(run_module, moto) -> None:
    s3, client = moto
    assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed"}))
    other = dict(s3, prefix="staging/pg")
    result = assert_ok(run_module(MODULE, {"s3": other, "preset": "seed", "purge": False}))
    assert result["changes"]["added"] == ["doctorq-staging-pg-abort-multipart", "doctorq-staging-pg-daily-data",
                                          "doctorq-staging-pg-daily-meta", "doctorq-staging-pg-weekly-data",
                                          "doctorq-staging-pg-weekly-meta"]
    held = by_id(server_rules(client, s3["bucket"]))
    assert len(held) == 10
    assert held["doctorq-staging-pg-weekly-data"]["Filter"]["And"]["Prefix"] == "staging/pg/weekly/"
    assert assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed", "purge": False}))["changed"] is False


def test_cost_traps_warn_but_apply(run_module, moto) -> None:
    s3, client = moto
    rules = [{"id": "short-deep", "transitions": [{"days": 0, "storage_class": "DEEP_ARCHIVE"}], "expiration_days": 100}]
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": rules}))
    assert result["changed"] is True
    assert any("DEEP_ARCHIVE bills at least 180 days" in w for w in result["warnings"])
    assert by_id(server_rules(client, s3["bucket"]))["short-deep"]["Expiration"] == {"Days": 100}


def test_a_server_that_stores_something_else_is_caught_and_undone(run_module, moto) -> None:
    """Read-back check: moto silently drops object size filters, which would widen a rule to every object."""
    s3, client = moto
    probe = {"ID": "probe", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 1024}, "Expiration": {"Days": 1}}
    client.put_bucket_lifecycle_configuration(Bucket=s3["bucket"], LifecycleConfiguration={"Rules": [probe]})
    if server_rules(client, s3["bucket"])[0]["Filter"] == probe["Filter"]:
        pytest.skip("this moto keeps object size filters; nothing to catch")
    assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES[:1]}))
    before = server_rules(client, s3["bucket"])

    rules = [{"id": "big-only", "filter": {"object_size_greater_than": 1048576}, "expiration_days": 1}]
    result = run_module(MODULE, {"s3": s3, "rules": rules})
    assert result["failed"] is True
    assert "stored something else" in result["msg"] and "big-only" in result["msg"]
    assert "previous configuration was put back" in result["msg"]
    assert server_rules(client, s3["bucket"]) == before


VALIDATION_CASES = [
    pytest.param([{"id": "a", "transitions": [{"days": 30, "storage_class": "GLACIER"},
                                              {"days": 60, "storage_class": "STANDARD_IA"}]}],
                 "S3 only moves objects to colder classes", id="transitions-out-of-order"),
    pytest.param([{"id": "a", "transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]}],
                 "S3 refuses STANDARD_IA before day 30", id="standard-ia-too-early"),
    pytest.param([{"id": "a", "transitions": [{"days": 5, "storage_class": "ONEZONE_IA"}]}],
                 "S3 refuses ONEZONE_IA before day 30", id="onezone-ia-too-early"),
    pytest.param([{"id": "a", "transitions": [{"days": 30, "storage_class": "STANDARD_IA"},
                                              {"days": 45, "storage_class": "GLACIER"}]}],
                 "keeps objects in STANDARD_IA at least 30 days", id="ia-left-too-early"),
    pytest.param([{"id": "a", "transitions": [{"days": 60, "storage_class": "GLACIER"}], "expiration_days": 30}],
                 "expiration_days on day 30 is not after the last transition", id="expiration-before-transition"),
    pytest.param([{"id": "a", "expiration_days": 1}, {"id": "a", "expiration_days": 2}],
                 "rule id 'a' is declared twice", id="duplicate-ids"),
    pytest.param([{"id": f"r{i}", "expiration_days": 1} for i in range(1001)],
                 "1001 rules declared; S3 allows at most 1000", id="too-many-rules"),
    pytest.param([{"id": "a", "transitions": [{"days": 1, "storage_class": "TAPE"}]}],
                 "storage_class 'TAPE' is not one S3 can move objects to", id="unknown-class"),
    pytest.param([{"id": "a", "filter": {"prefix": "x/"}}], "rule 'a' has no action", id="no-action"),
    pytest.param([{"id": "a", "filter": {"tags": {"k": "v"}}, "abort_incomplete_multipart_days": 1}],
                 "abort_incomplete_multipart_days cannot be used with a tags filter", id="abort-with-tags"),
    pytest.param([{"id": "a", "expiration_days": 0}], "expiration_days must be a whole number >= 1",
                 id="expiration-zero"),
    pytest.param([{"id": "a", "filter": {"object_size_greater_than": 10, "object_size_less_than": 5},
                   "expiration_days": 1}], "must be smaller than object_size_less_than", id="size-bounds"),
    pytest.param([{"id": "a", "expiration_days": 5, "expired_object_delete_marker": True}],
                 "cannot be combined with expiration_days", id="delete-marker-with-days"),
]


@pytest.mark.parametrize(("rules", "message"), VALIDATION_CASES)
def test_validation_errors_say_what_to_fix_before_any_request(run_module, moto, rules, message) -> None:
    s3, client = moto
    result = run_module(MODULE, {"s3": s3, "rules": rules})
    assert result["failed"] is True
    assert message in result["msg"], result["msg"]
    assert "nothing was changed" in result["msg"]
    assert server_rules(client, s3["bucket"]) is None
    # no request is needed to find out: the same declaration fails identically with no server at all
    offline = run_module(MODULE, {"s3": dict(s3, endpoint_url="http://127.0.0.1:9", max_attempts=1), "rules": rules})
    assert offline["failed"] is True and offline["msg"] == result["msg"]


def test_preset_rule_ids_may_not_be_repeated(run_module, moto) -> None:
    s3, _client = moto
    result = run_module(MODULE, {"s3": s3, "preset": "seed",
                                 "rules": [{"id": "doctorq-postgresql-daily-data", "expiration_days": 3}]})
    assert result["failed"] is True and "declared twice" in result["msg"]


# --------------------------------------------------------------------------
# SeaweedFS: 501 NotImplemented to transitions, both ways


def test_unsupported_transitions_fail_by_default_naming_them(run_module, s3_bucket, seaweed) -> None:
    client = seaweed.client()
    client.put_bucket_lifecycle_configuration(Bucket=s3_bucket["bucket"], LifecycleConfiguration={"Rules": [UNMANAGED]})
    before = server_rules(client, s3_bucket["bucket"])
    result = run_module(MODULE, {"s3": s3_bucket, "preset": "seed"})
    assert result["failed"] is True
    assert "NotImplemented" in result["msg"]
    assert "storage class transitions in rules 'doctorq-postgresql-daily-data', 'doctorq-postgresql-weekly-data'" \
        in result["msg"]
    assert "on_unsupported=warn" in result["msg"]
    assert server_rules(client, s3_bucket["bucket"]) == before


def test_unsupported_transitions_warn_applies_the_rest(run_module, s3_bucket, seaweed) -> None:
    client = seaweed.client()
    args = {"s3": s3_bucket, "preset": "seed", "on_unsupported": "warn"}
    result = assert_ok(run_module(MODULE, args))
    assert result["changed"] is True
    assert result["unsupported"] == [
        {"rule": "doctorq-postgresql-daily-data", "left_out": "transitions", "detail": "GLACIER after 7 days"},
        {"rule": "doctorq-postgresql-weekly-data", "left_out": "transitions",
         "detail": "GLACIER after 7 days, DEEP_ARCHIVE after 30 days"},
    ]
    assert any("does not implement storage class transitions" in w for w in result["warnings"])
    # the Glacier cost trap of the seed's schedule does not apply when nothing moves to Glacier
    assert result["cost_warnings"] == [] and not any("GLACIER bills" in w for w in result["warnings"])
    held = by_id(server_rules(client, s3_bucket["bucket"]))
    assert len(held) == 5
    assert all("Transitions" not in rule for rule in held.values())
    assert held["doctorq-postgresql-daily-data"]["Expiration"] == {"Days": 30}
    assert held["doctorq-postgresql-weekly-data"]["Expiration"] == {"Days": 365}
    assert held["doctorq-postgresql-weekly-data"]["Filter"]["And"]["Prefix"] == "postgresql/weekly/"
    assert held["doctorq-postgresql-abort-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}

    again = assert_ok(run_module(MODULE, args))
    assert again["changed"] is False
    assert [u["rule"] for u in again["unsupported"]] == ["doctorq-postgresql-daily-data", "doctorq-postgresql-weekly-data"]
    assert by_id(server_rules(client, s3_bucket["bucket"])) == held


def test_unsupported_rule_with_nothing_left_is_dropped_with_warn(run_module, s3_bucket, seaweed) -> None:
    client = seaweed.client()
    rules = [{"id": "only-moves", "transitions": [{"days": 1, "storage_class": "GLACIER"}]},
             {"id": "old-versions", "noncurrent_transitions": [{"days": 1, "storage_class": "GLACIER"}],
              "noncurrent_expiration_days": 30}]
    result = assert_ok(run_module(MODULE, {"s3": s3_bucket, "rules": rules, "on_unsupported": "warn"}))
    assert {(u["rule"], u["left_out"]) for u in result["unsupported"]} == {
        ("only-moves", "transitions"), ("only-moves", "rule"), ("old-versions", "noncurrent_transitions")}
    held = by_id(server_rules(client, s3_bucket["bucket"]))
    assert list(held) == ["old-versions"]
    assert held["old-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert "NoncurrentVersionTransitions" not in held["old-versions"]


def test_s3_option_is_required(run_module) -> None:
    result = run_module(MODULE, {"rules": PORTABLE_RULES})
    assert result["failed"] is True and "missing required argument: s3" in result["msg"]
