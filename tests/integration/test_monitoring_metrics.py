"""The metrics monitoring/ alerts and graphs on are the ones real runs write (issue 14, monitoring).

Backups and drills of a real database (PostgreSQL and SeaweedFS of the test
bed) with ``metrics_dir``: every name they write is in runframe's vocabulary,
and every name the rules and the dashboard use for database backups and drills
is written. Along the way, the facts the
alerts need: backups S3 lacks after an outage, and a drill's RPO over its
limit.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest

from backup_support import closed_port
from monitoring_support import monitored_names, vocabulary

# What only PITR drills (pgBackRest) write.
PITR_ONLY = {"doctorq_drill_archive_lag_seconds"}
SAMPLE_RE = re.compile(r'(doctorq_[a-z0-9_]+)\{name="([^"]*)",database="\2"\} (\S+)')


def prom(path: str) -> dict[str, float]:
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    samples = {}
    for line in lines:
        match = SAMPLE_RE.fullmatch(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1)] = float(match.group(3))
    return samples


def test_real_backups_and_drills_write_what_the_monitoring_uses(pg_server, pg_db, s3_bucket, tmp_path, run_module):
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    common: dict[str, Any] = {**pg_server.params(pg_db), "backup_dir": str(tmp_path / "backups"),
                              "notification": {"metrics_dir": str(textfile)}}
    backup_prom = os.path.join(textfile, f"doctorq_backup_{pg_db}.prom")
    drill_prom = os.path.join(textfile, f"doctorq_drill_{pg_db}.prom")

    # S3 down: the backup is kept on disk, the run fails, and the metrics say S3 lacks one backup
    down = {**s3_bucket, "endpoint_url": f"http://127.0.0.1:{closed_port()}", "max_attempts": 1}
    assert run_module("pg_backup", {**common, "weekly": "never", "s3": down})["failed"]
    after_outage = prom(backup_prom)
    assert after_outage["doctorq_backup_last_run_status"] == 0
    assert after_outage["doctorq_backup_s3_pending_uploads"] == 1

    time.sleep(1.1)  # the next backup's name (to the second) differs
    caught_up = run_module("pg_backup", {**common, "weekly": "never", "s3": s3_bucket})
    assert not caught_up.get("failed"), caught_up.get("msg")
    assert len(caught_up["caught_up"]) == 1
    backup = prom(backup_prom)
    assert backup["doctorq_backup_last_run_status"] == 1
    assert backup["doctorq_backup_s3_pending_uploads"] == 0

    time.sleep(1.1)  # the RPO is counted in whole seconds from the backup: a drill in its second would show 0
    drill = run_module("restore_drill", {**common, "s3": s3_bucket})
    assert not drill.get("failed"), drill.get("msg")
    drilled = prom(drill_prom)
    assert drilled["doctorq_drill_last_run_status"] == 1
    assert drilled["doctorq_drill_rpo_limit_seconds"] == 26 * 3600
    assert 0 < drilled["doctorq_drill_rpo_seconds"] < drilled["doctorq_drill_rpo_limit_seconds"]

    # a drill failing on its RPO reports that RPO, over the limit: what DoctorqDrillRpoOverLimit compares
    strict = run_module("restore_drill", {**common, "s3": s3_bucket, "max_rpo_hours": 0.0001})
    assert strict["failed"] and "max_rpo_hours" in strict["msg"]
    failed = prom(drill_prom)
    assert failed["doctorq_drill_last_run_status"] == 0
    assert failed["doctorq_drill_rpo_limit_seconds"] == pytest.approx(0.36)
    assert failed["doctorq_drill_rpo_seconds"] > failed["doctorq_drill_rpo_limit_seconds"]
    assert failed["doctorq_drill_rto_seconds"] == drilled["doctorq_drill_rto_seconds"]  # the last success's stays

    written = set(backup) | set(failed)
    assert written <= vocabulary()
    wanted = {name for name in monitored_names() if name.startswith(("doctorq_backup_", "doctorq_drill_"))}
    # the archive's lag is a PITR drill's (tests/integration/test_pitr_drill_rpo.py checks a real one writes it)
    assert wanted - written == PITR_ONLY
