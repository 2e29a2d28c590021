"""monitoring/'s files as the tests read them: the rules, the dashboard's queries, the metric names both use, and
the collection's metric vocabulary (runframe.METRICS for every job of runframe.METRIC_JOBS)."""

from __future__ import annotations

import glob
import json
import os
import re

import yaml

from ansible_collections.doctorq.backup.plugins.module_utils.runframe import METRIC_JOBS, METRICS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "monitoring", "prometheus", "doctorq-backup.rules.yml")
RULE_TESTS = sorted(glob.glob(os.path.join(ROOT, "monitoring", "prometheus", "tests", "*.yml")))
DASHBOARD = os.path.join(ROOT, "monitoring", "grafana", "doctorq-backup.json")
# Metric names in PromQL: identifiers starting doctorq_ (label values are quoted, so a name in a label value
# such as database="doctorq_x" is not taken for one).
NAME_RE = re.compile(r'(?<![\w"])doctorq_\w+')


def vocabulary() -> set[str]:
    """Every metric name the collection's jobs may write."""
    return {f"doctorq_{job}_{metric}" for job in METRIC_JOBS for metric in METRICS}


def rules() -> list[dict]:
    with open(RULES, encoding="utf-8") as handle:
        return [rule for group in yaml.safe_load(handle)["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """The PromQL of every panel target and query variable."""
    with open(DASHBOARD, encoding="utf-8") as handle:
        dash = json.load(handle)
    queries = [target["expr"] for panel in dash["panels"] for target in panel.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            queries.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return queries


def names_in(queries: list[str]) -> set[str]:
    return {name for query in queries for name in NAME_RE.findall(query)}


def monitored_names() -> set[str]:
    """The metric names the rules and the dashboard use."""
    return names_in([rule["expr"] for rule in rules()] + dashboard_queries())
