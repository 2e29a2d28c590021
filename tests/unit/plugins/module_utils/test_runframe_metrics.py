"""The metrics every job writes: one vocabulary, facts of a failed run kept or written as the run says."""

from __future__ import annotations

import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils.notify import write_metrics
from ansible_collections.doctorq.backup.plugins.module_utils.runframe import METRICS, samples


def _read(path):
    values = {}
    for line in open(path, encoding="utf-8"):
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_success_writes_duration_and_facts():
    out = samples("success", 12.5, {"s3_pending_uploads": 0}, last_size_bytes=2048)
    assert out["last_run_status"] == 1.0
    assert out["last_success_timestamp_seconds"] == out["last_run_timestamp_seconds"]
    assert out["last_duration_seconds"] == 12.5
    assert out["last_size_bytes"] == 2048.0
    assert out["s3_pending_uploads"] == 0.0


def test_failure_writes_only_what_the_run_measured():
    out = samples("failure", 3.0, {"rpo_seconds": 100000, "rpo_limit_seconds": 93600}, rto_seconds=3.0)
    assert out["last_run_status"] == 0.0
    assert out["rpo_seconds"] == 100000.0  # the RPO that failed the drill is what the alert needs
    assert out["rpo_limit_seconds"] == 93600.0
    assert "rto_seconds" not in out and "last_success_timestamp_seconds" not in out
    assert "last_duration_seconds" not in out


def test_a_name_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="last_status"):
        samples("success", 1.0, last_status=1)
    with pytest.raises(ValueError, match="s3_missing"):
        samples("failure", 1.0, {"s3_missing": 2})


def test_a_failed_run_keeps_the_last_success_and_updates_measured_facts(tmp_path):
    good = samples("success", 4.0, {"rpo_seconds": 60, "rpo_limit_seconds": 600}, rto_seconds=4.0)
    write_metrics(str(tmp_path), "drill", "shop", good)
    bad = samples("failure", 9.0, {"rpo_seconds": 900, "rpo_limit_seconds": 600})
    path = write_metrics(str(tmp_path), "drill", "shop", bad)
    got = _read(path)
    assert got['doctorq_drill_last_run_status{name="shop",database="shop"}'] == 0.0
    assert got['doctorq_drill_rpo_seconds{name="shop",database="shop"}'] == 900.0
    assert got['doctorq_drill_rto_seconds{name="shop",database="shop"}'] == 4.0  # the last verified restore's RTO stays
    assert got['doctorq_drill_last_duration_seconds{name="shop",database="shop"}'] == 4.0
    assert set(METRICS) >= {name.split("{")[0][len("doctorq_drill_"):] for name in got}


def test_names_that_read_the_same_in_a_file_name_keep_their_own_files(tmp_path):
    # "a b" and "a_b" both read "a_b" in a file name: the second must not overwrite the first's samples
    first = write_metrics(str(tmp_path), "backup", "a b", samples("success", 1.0))
    second = write_metrics(str(tmp_path), "backup", "a_b", samples("failure", 2.0))
    assert os.path.basename(first) == "doctorq_backup_a_b.prom"
    assert os.path.basename(second).startswith("doctorq_backup_a_b-") and second != first
    assert _read(first)['doctorq_backup_last_run_status{name="a b",database="a b"}'] == 1.0
    assert _read(second)['doctorq_backup_last_run_status{name="a_b",database="a_b"}'] == 0.0
    # later runs find their own file again, and a failure keeps the time of its own last success
    assert write_metrics(str(tmp_path), "backup", "a_b", samples("success", 3.0)) == second
    assert write_metrics(str(tmp_path), "backup", "a b", samples("failure", 4.0)) == first
    assert _read(first)['doctorq_backup_last_run_status{name="a b",database="a b"}'] == 0.0
    assert 'doctorq_backup_last_success_timestamp_seconds{name="a b",database="a b"}' in _read(first)
    assert len(os.listdir(tmp_path)) == 2
    # a label with quotes and a backslash is read back as written: its run finds its own file
    odd = 'a "b"\\'
    path = write_metrics(str(tmp_path), "backup", odd, samples("success", 1.0))
    assert write_metrics(str(tmp_path), "backup", odd, samples("success", 1.0)) == path
