"""monitoring/: the alerting rules pass promtool's check and their own tests, and every metric the rules and the
dashboard use is one the collection writes (runframe's vocabulary; tests/integration/test_monitoring_metrics.py
checks that vocabulary against real runs).

promtool (Debian's ``prometheus`` package, installed by scripts/setup.sh) is required: without it these tests
fail, they do not skip.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from monitoring_support import NAME_RE, RULE_TESTS, RULES, dashboard_queries, names_in, rules, vocabulary


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: install Debian's prometheus package (scripts/setup.sh does).")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules():
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_rules_pass_their_unit_tests():
    assert RULE_TESTS
    done = promtool("test", "rules", *RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        with open(path, encoding="utf-8") as handle:
            for case in yaml.safe_load(handle)["tests"]:
                for check in case.get("alert_rule_test", []):
                    (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - firing == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"


def test_the_rules_use_only_metrics_the_collection_writes():
    used = names_in([rule["expr"] for rule in rules()])
    assert used, "no doctorq_ metric found in the rules"
    assert used - vocabulary() == set()


def test_the_dashboard_uses_only_metrics_the_collection_writes():
    queries = dashboard_queries()
    used = names_in(queries)
    assert all(NAME_RE.search(query) for query in queries), "a dashboard query without a doctorq_ metric"
    assert used - vocabulary() == set()
    # what the dashboard is for: last success, duration, size, drill RTO and RPO, failures
    assert {"doctorq_backup_last_success_timestamp_seconds", "doctorq_backup_last_duration_seconds",
            "doctorq_backup_last_size_bytes", "doctorq_drill_rto_seconds", "doctorq_drill_rpo_seconds",
            "doctorq_backup_last_run_status", "doctorq_drill_last_run_status"} <= used


def test_the_pitr_archive_lag_alert_compares_the_lag_with_the_drills_limit():
    """What a disaster at a PITR drill's start would lose, against drill.max_rpo_seconds (both written by the drill)."""
    (rule,) = [rule for rule in rules() if rule["alert"] == "DoctorqPitrArchiveLagOverLimit"]
    assert names_in([rule["expr"]]) == {"doctorq_drill_archive_lag_seconds", "doctorq_drill_rpo_limit_seconds"}
    assert names_in([rule["expr"]]) <= vocabulary()
    assert rule["labels"]["severity"] == "critical"


def test_the_name_check_finds_a_wrong_name():
    """The checks above would pass on no names at all; this one proves the pattern sees a misspelt one."""
    found = set(NAME_RE.findall('time() - doctorq_backup_last_sucess_timestamp_seconds{database="doctorq_x"} > 1'))
    assert found == {"doctorq_backup_last_sucess_timestamp_seconds"}
    assert found - vocabulary() == found
