# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3_lifecycle against real servers: moto (full AWS lifecycle semantics) and SeaweedFS (the degraded path).

Every test follows the house pattern where it applies: check mode, real run,
verify what the server really holds (with a plain boto3 client, not the
module's own reader), run again and assert nothing changed.
"""

from __future__ import annotations

import copy
import re
import secrets
import sys
from typing import Any

import pytest

from backup_support import s3_keys, s3_tags
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


# Every storage class, every filter kind moto keeps (it drops object size bounds: those run on SeaweedFS
# below), noncurrent version transitions and expiration, delete markers, a disabled rule; declared with
# classes in mixed case and transitions out of order.
EVERY_CLASS_RULES: list[dict[str, Any]] = [
    {"id": "warm", "filter": {"tags": {"tier": "warm"}},
     "transitions": [{"days": 90, "storage_class": "glacier_ir"}, {"days": 30, "storage_class": "standard_ia"},
                     {"days": 60, "storage_class": "Intelligent_Tiering"}],
     "expiration_days": 200},
    {"id": "cold", "filter": {"prefix": "cold/", "tags": {"b": "2", "a": "1"}},
     "transitions": [{"days": 30, "storage_class": "ONEZONE_IA"}, {"days": 150, "storage_class": "DEEP_ARCHIVE"},
                     {"days": 60, "storage_class": "GLACIER"}],
     "expiration_days": 400},
    {"id": "versions", "filter": {"prefix": "pg/"},
     "noncurrent_transitions": [{"days": 60, "storage_class": "glacier"},
                                {"days": 30, "storage_class": "STANDARD_IA", "newer_versions": 2}],
     "noncurrent_expiration_days": 200},
    {"id": "markers", "filter": {"prefix": "pg/"}, "expired_object_delete_marker": True},
    {"id": "paused", "status": "disabled", "filter": {"prefix": "tmp/"}, "expiration_days": 3},
]


def test_every_storage_class_filter_and_version_action_round_trips(run_module, moto) -> None:
    s3, client = moto
    args = {"s3": s3, "rules": EVERY_CLASS_RULES}
    predicted = assert_ok(run_module(MODULE, args, check_mode=True))
    assert predicted["changed"] is True and server_rules(client, s3["bucket"]) is None

    result = assert_ok(run_module(MODULE, args))
    assert result["rules"] == predicted["rules"]
    assert result["cost_warnings"] == []  # every class kept at least its minimum billed duration
    held = by_id(server_rules(client, s3["bucket"]))
    assert held["warm"]["Filter"] == {"Tag": {"Key": "tier", "Value": "warm"}}
    assert held["warm"]["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"},
                                           {"Days": 60, "StorageClass": "INTELLIGENT_TIERING"},
                                           {"Days": 90, "StorageClass": "GLACIER_IR"}]
    assert held["warm"]["Expiration"] == {"Days": 200}
    assert held["cold"]["Filter"]["And"]["Prefix"] == "cold/"
    assert sorted(held["cold"]["Filter"]["And"]["Tags"], key=lambda t: t["Key"]) == [
        {"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    assert held["cold"]["Transitions"] == [{"Days": 30, "StorageClass": "ONEZONE_IA"},
                                           {"Days": 60, "StorageClass": "GLACIER"},
                                           {"Days": 150, "StorageClass": "DEEP_ARCHIVE"}]
    assert held["versions"]["NoncurrentVersionTransitions"] == [
        {"NoncurrentDays": 30, "StorageClass": "STANDARD_IA", "NewerNoncurrentVersions": 2},
        {"NoncurrentDays": 60, "StorageClass": "GLACIER"}]
    assert held["versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 200}
    assert held["markers"]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert held["paused"]["Status"] == "Disabled"

    # same rules, other order and case: nothing to do
    reordered = [dict(r, transitions=list(reversed(r.get("transitions") or []))) for r in reversed(EVERY_CLASS_RULES)]
    assert assert_ok(run_module(MODULE, {"s3": s3, "rules": reordered}))["changed"] is False
    assert by_id(server_rules(client, s3["bucket"])) == held


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
    assert weekly["Filter"]["And"]["Prefix"] == "postgresql/"  # the kind tag tells weeklies apart
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

    # the seed's Glacier stay (23 days) is below Glacier's 90-day minimum, whether the objects are then
    # expired (dailies) or moved on (weeklies): warned, not refused
    assert result["cost_warnings"] == [
        "rule 'doctorq-postgresql-daily-data': objects stay 23 days in GLACIER (day 7 to 30, then expired), but "
        "GLACIER bills at least 90 days: each object is charged 67 days more than it is stored.",
        "rule 'doctorq-postgresql-weekly-data': objects stay 23 days in GLACIER (day 7 to 30, then moved on to "
        "DEEP_ARCHIVE), but GLACIER bills at least 90 days: each object is charged 67 days more than it is stored.",
    ]
    assert all(w in result["warnings"] for w in result["cost_warnings"])

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
    assert held["doctorq-staging-pg-weekly-data"]["Filter"]["And"]["Prefix"] == "staging/pg/"
    assert assert_ok(run_module(MODULE, {"s3": s3, "preset": "seed", "purge": False}))["changed"] is False


def rules_for(rules: list[dict[str, Any]], key: str, tags: dict[str, str]) -> list[str]:
    """Ids of the server's rules that apply to an object, by S3's filter semantics (prefix and every tag)."""
    ids = []
    for rule in rules:
        flt = rule.get("Filter", {})
        both = flt.get("And", flt)
        wanted = {t["Key"]: t["Value"] for t in both.get("Tags", []) + ([flt["Tag"]] if "Tag" in flt else [])}
        if key.startswith(both.get("Prefix", rule.get("Prefix", ""))) and all(tags.get(k) == v for k, v in wanted.items()):
            ids.append(rule["ID"])
    return sorted(ids)


def test_seed_preset_covers_what_the_backups_write(run_module, moto, pg_server, pg_db, tmp_path) -> None:
    """Real backups of two hosts (dailies, weeklies, a file set) under one parent prefix, and the preset on it:
    every object falls under exactly the rule of its kind and part (and the abort rule), by its key and the tags
    it really carries."""
    s3, client = moto
    app = tmp_path / "app"
    app.mkdir()
    (app / "upload.bin").write_bytes(b"x" * 4096)
    for host in ("db1", "db2"):
        assert_ok(run_module("pg_backup", {**pg_server.params(pg_db), "backup_dir": str(tmp_path / host),
                                           "s3": dict(s3, prefix=f"doctorq/{host}"), "weekly": "always"}))
    assert_ok(run_module("files_backup", {"name": "app", "paths": [str(app)], "backup_dir": str(tmp_path / "files"),
                                          "s3": dict(s3, prefix="doctorq/db1/files"), "weekly": "always"}))
    assert_ok(run_module(MODULE, {"s3": dict(s3, prefix="doctorq"), "preset": "seed"}))
    rules = server_rules(client, s3["bucket"])

    seen = set()
    for key in s3_keys(client, s3["bucket"]):
        host = key.split("/")[1]
        kind = "weekly" if "/weekly/" in key else "daily"
        part = "meta" if re.search(r"\.(md5|sha256|manifest\.json)$", key) else "data"
        what = "files" if "/files/" in key else "database"
        # the abort rule (prefix only) also covers the key, for an upload of it that a killed backup left behind
        assert rules_for(rules, key, s3_tags(client, s3["bucket"], key)) == [
            "doctorq-doctorq-abort-multipart", f"doctorq-doctorq-{kind}-{part}"], key
        seen.add((host, what, kind, part))
    kinds_parts = [(kind, part) for kind in ("daily", "weekly") for part in ("data", "meta")]
    assert seen == {(host, what, kind, part) for host, what in (("db1", "database"), ("db2", "database"), ("db1", "files"))
                    for kind, part in kinds_parts}


def test_site_storage_play_covers_every_hosts_backups(ansible_playbook, moto, tmp_path) -> None:
    """playbooks/site.yml applies the preset once for the fleet, on the parent of the per-host prefixes."""
    s3, client = moto
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[dbservers]\n" + "".join(
        f"{host} ansible_connection=local ansible_python_interpreter={sys.executable}\n" for host in ("db1", "db2")))
    extra = {"backup_databases": ["doctorq"], "ansible_become": False,
             "backup_s3": dict(s3, prefix="doctorq/{{ inventory_hostname }}")}

    def site(**more: Any) -> Any:
        return ansible_playbook("playbooks/site.yml", {**extra, **more}, inventory=str(inventory),
                                args=["--tags", "storage"])

    run = site()
    assert run.returncode == 0, run.stdout[-4000:]
    held = by_id(server_rules(client, s3["bucket"]))
    assert sorted(held) == ["doctorq-doctorq-abort-multipart", "doctorq-doctorq-daily-data",
                            "doctorq-doctorq-daily-meta", "doctorq-doctorq-weekly-data", "doctorq-doctorq-weekly-meta"]
    assert {rule["Filter"].get("And", rule["Filter"])["Prefix"] for rule in held.values()} == {"doctorq/"}
    again = site()
    assert again.returncode == 0 and re.search(r"db1\s+: ok=\d+\s+changed=0 ", again.stdout), again.stdout[-2000:]

    # a lifecycle prefix that leaves db2's backups out fails before any change, naming them, without secrets
    narrow = site(backup_s3_lifecycle_prefix="doctorq/db1")
    assert narrow.returncode != 0
    assert f"Backups under s3://{s3['bucket']}/doctorq/db2/ would never be archived or expired" in narrow.stdout
    assert "secret_key" not in narrow.stdout
    assert by_id(server_rules(client, s3["bucket"])) == held


def test_cost_traps_warn_but_apply(run_module, moto) -> None:
    s3, client = moto
    rules = [{"id": "short-deep", "transitions": [{"days": 0, "storage_class": "DEEP_ARCHIVE"}], "expiration_days": 100}]
    result = assert_ok(run_module(MODULE, {"s3": s3, "rules": rules}))
    assert result["changed"] is True
    assert result["cost_warnings"] == [
        "rule 'short-deep': objects stay 100 days in DEEP_ARCHIVE (day 0 to 100, then expired), but DEEP_ARCHIVE "
        "bills at least 180 days: each object is charged 80 days more than it is stored."]
    assert result["cost_warnings"][0] in result["warnings"]
    assert by_id(server_rules(client, s3["bucket"]))["short-deep"]["Expiration"] == {"Days": 100}


def test_a_server_that_stores_something_else_is_caught_and_undone(run_module, moto) -> None:
    """Read-back check: moto silently drops object size filters, which would widen a rule to every object."""
    s3, client = moto
    probe = {"ID": "probe", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 1024}, "Expiration": {"Days": 1}}
    client.put_bucket_lifecycle_configuration(Bucket=s3["bucket"], LifecycleConfiguration={"Rules": [probe]})
    assert server_rules(client, s3["bucket"])[0]["Filter"] == {}, "this moto keeps size filters: find another trigger"
    assert_ok(run_module(MODULE, {"s3": s3, "rules": PORTABLE_RULES[:1]}))
    before = server_rules(client, s3["bucket"])

    rules = [{"id": "big-only", "filter": {"object_size_greater_than": 1048576}, "expiration_days": 1}]
    result = run_module(MODULE, {"s3": s3, "rules": rules})
    assert result["failed"] is True
    assert "stored something else" in result["msg"] and "big-only" in result["msg"]
    assert "previous configuration was put back" in result["msg"]
    assert server_rules(client, s3["bucket"]) == before


# (rules, what is wrong, what to do): each issue's validation error, and the other mistakes S3 would refuse.
VALIDATION_CASES = [
    pytest.param([{"id": "a", "transitions": [{"days": 30, "storage_class": "GLACIER"},
                                              {"days": 60, "storage_class": "STANDARD_IA"}]}],
                 "STANDARD_IA on day 60 comes after GLACIER on day 30; S3 only moves objects to colder classes",
                 "reorder the days", id="transitions-not-in-increasing-day-order"),
    pytest.param([{"id": "a", "transitions": [{"days": 30, "storage_class": "GLACIER"},
                                              {"days": 30, "storage_class": "DEEP_ARCHIVE"}]}],
                 "two transitions on day 30 (GLACIER and DEEP_ARCHIVE)",
                 "give each transition its own day, in increasing order", id="transitions-on-the-same-day"),
    pytest.param([{"id": "a", "transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]}],
                 "S3 refuses STANDARD_IA before day 30", "set days to 30 or more, or use GLACIER_IR/GLACIER",
                 id="standard-ia-too-early"),
    pytest.param([{"id": "a", "transitions": [{"days": 5, "storage_class": "ONEZONE_IA"}]}],
                 "S3 refuses ONEZONE_IA before day 30", "set days to 30 or more", id="onezone-ia-too-early"),
    pytest.param([{"id": "a", "noncurrent_transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]}],
                 "noncurrent transition to STANDARD_IA after 10 noncurrent days: S3 refuses STANDARD_IA before day 30",
                 "set days to 30 or more", id="noncurrent-standard-ia-too-early"),
    pytest.param([{"id": "a", "transitions": [{"days": 30, "storage_class": "STANDARD_IA"},
                                              {"days": 45, "storage_class": "GLACIER"}]}],
                 "keeps objects in STANDARD_IA at least 30 days", "move it to day 60 or later", id="ia-left-too-early"),
    pytest.param([{"id": "a", "transitions": [{"days": 60, "storage_class": "GLACIER"}], "expiration_days": 30}],
                 "expiration_days on day 30 is not after the last transition (GLACIER on day 60)",
                 "expire after day 60", id="expiration-before-transition"),
    pytest.param([{"id": "a", "noncurrent_transitions": [{"days": 40, "storage_class": "GLACIER"}],
                   "noncurrent_expiration_days": 40}],
                 "noncurrent_expiration_days on day 40 is not after the last noncurrent transition",
                 "expire after day 40", id="noncurrent-expiration-before-transition"),
    pytest.param([{"id": "a", "expiration_days": 1}, {"id": "a", "expiration_days": 2}],
                 "rule id 'a' is declared twice", "give each rule its own id", id="duplicate-ids"),
    pytest.param([{"id": f"r{i}", "expiration_days": 1} for i in range(1001)],
                 "1001 rules declared; S3 allows at most 1000", "merge rules that share a filter", id="too-many-rules"),
    pytest.param([{"id": "a", "transitions": [{"days": 1, "storage_class": "TAPE"}]}],
                 "storage_class 'TAPE' is not one S3 can move objects to", "use one of STANDARD_IA", id="unknown-class"),
    pytest.param([{"id": "a", "filter": {"prefix": "x/"}}], "rule 'a' has no action", "set transitions, expiration_days",
                 id="no-action"),
    pytest.param([{"id": "a", "filter": {"tags": {"k": "v"}}, "abort_incomplete_multipart_days": 1}],
                 "abort_incomplete_multipart_days cannot be used with a tags filter",
                 "put it in its own rule filtered by prefix only", id="abort-with-tags"),
    pytest.param([{"id": "a", "expiration_days": 0}], "expiration_days must be a whole number >= 1, got 0",
                 ">= 1", id="expiration-zero"),
    pytest.param([{"id": "a", "filter": {"object_size_greater_than": 10, "object_size_less_than": 5},
                   "expiration_days": 1}], "object_size_greater_than (10) must be smaller than object_size_less_than (5)",
                 "or no object matches", id="size-bounds"),
    pytest.param([{"id": "a", "expiration_days": 5, "expired_object_delete_marker": True}],
                 "expired_object_delete_marker cannot be combined with expiration_days", "put them in two rules",
                 id="delete-marker-with-days"),
]


@pytest.mark.parametrize(("rules", "problem", "fix"), VALIDATION_CASES)
def test_validation_errors_say_what_to_fix_before_any_request(run_module, moto, rules, problem, fix) -> None:
    s3, client = moto
    result = run_module(MODULE, {"s3": s3, "rules": rules})
    assert result["failed"] is True
    assert result["msg"].startswith("invalid lifecycle rules, nothing was changed:"), result["msg"]
    assert problem in result["msg"] and fix in result["msg"], result["msg"]
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


def test_object_size_filters_round_trip(run_module, s3_bucket, seaweed) -> None:
    """Size bounds, alone and combined with prefix and tags, on the server that keeps them (moto drops them)."""
    client = seaweed.client()
    rules = [
        {"id": "big", "filter": {"object_size_greater_than": 1048576}, "expiration_days": 10},
        {"id": "small", "filter": {"object_size_less_than": 1024}, "expiration_days": 5},
        {"id": "all-of-them", "filter": {"prefix": "pg/", "tags": {"k": "v", "j": "w"}, "object_size_greater_than": 10,
                                         "object_size_less_than": 1048576}, "expiration_days": 7},
        {"id": "versions", "noncurrent_expiration_days": 30, "noncurrent_newer_versions": 2},
    ]
    assert assert_ok(run_module(MODULE, {"s3": s3_bucket, "rules": rules}))["changed"] is True
    held = by_id(server_rules(client, s3_bucket["bucket"]))
    assert held["big"]["Filter"] == {"ObjectSizeGreaterThan": 1048576}
    assert held["small"]["Filter"] == {"ObjectSizeLessThan": 1024}
    both = held["all-of-them"]["Filter"]["And"]
    assert (both["Prefix"], both["ObjectSizeGreaterThan"], both["ObjectSizeLessThan"]) == ("pg/", 10, 1048576)
    assert sorted(both["Tags"], key=lambda t: t["Key"]) == [{"Key": "j", "Value": "w"}, {"Key": "k", "Value": "v"}]
    assert held["versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30, "NewerNoncurrentVersions": 2}
    assert assert_ok(run_module(MODULE, {"s3": s3_bucket, "rules": rules}))["changed"] is False

    changed = copy.deepcopy(rules)
    changed[2]["filter"]["object_size_less_than"] = 2097152
    predicted = assert_ok(run_module(MODULE, {"s3": s3_bucket, "rules": changed}, check_mode=True, diff=True))
    assert predicted["changes"]["modified"] == ["all-of-them"]
    assert predicted["diff"]["after"]["rules"][0]["filter"]["object_size_less_than"] == 2097152
    assert by_id(server_rules(client, s3_bucket["bucket"])) == held
    assert assert_ok(run_module(MODULE, {"s3": s3_bucket, "rules": changed}))["changes"]["modified"] == ["all-of-them"]
    assert by_id(server_rules(client, s3_bucket["bucket"]))["all-of-them"]["Filter"]["And"]["ObjectSizeLessThan"] == 2097152


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
    assert held["doctorq-postgresql-weekly-data"]["Filter"]["And"]["Prefix"] == "postgresql/"
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
