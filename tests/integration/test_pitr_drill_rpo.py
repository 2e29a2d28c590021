"""A PITR drill's honest RPO (issue 14, "What DBAs expect"): what a disaster at the drill's start would lose.

The drill measures before it commits or switches anything: the newest commit
in the archived WAL against its start. With archiving working (and a switch
archived just before) that is seconds; with archiving stopped it grows with
the time since, the drill fails on drill.max_rpo_seconds while its recovery
still works, and the metrics behind DoctorqPitrArchiveLagOverLimit say so.
Its own cluster and SeaweedFS (test_pgbackrest's bed), since it stops the
cluster's archiving.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import time

# test_pgbackrest's bed (TLS SeaweedFS, an archiving cluster, a stanza) and base backup, one of its own for this module
from integration.test_pgbackrest import base_backup, bed, pitr_args, write_conf  # noqa: F401  # pylint: disable=unused-import

from monitoring_support import monitored_names

SAMPLE_RE = re.compile(r'^(doctorq_drill_[a-z_]+)\{name="pgbackrest/main",database="pgbackrest/main"\} (\S+)$', re.M)


def drill_metrics(directory: str) -> dict[str, float]:
    with open(os.path.join(directory, "doctorq_drill_pgbackrest_main.prom"), encoding="utf-8") as handle:
        return {name: float(value) for name, value in SAMPLE_RE.findall(handle.read())}


def test_honest_rpo_grows_while_archiving_is_stopped(bed, base_backup, run_module, tmp_path):  # pylint: disable=redefined-outer-name
    server = bed["server"]
    metrics = str(tmp_path / "metrics")
    os.makedirs(metrics)
    table = f"rpo_{secrets.token_hex(3)}"
    server.query(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    server.query(f"INSERT INTO {table} SELECT generate_series(1, 10)")
    bed["engine"].check()  # a WAL switch, archived: the healthy state archive_timeout keeps

    healthy = run_module("pg_pitr_restore", pitr_args(bed, into="drill", drill={"max_rpo_seconds": 60},
                                                      notification={"metrics_dir": metrics}))
    assert not healthy.get("failed"), healthy.get("msg")
    assert 0 <= healthy["rpo_s"] < 30 and healthy["exposure"]["seconds"] == healthy["rpo_s"]
    assert healthy["exposure"]["newest_archived_commit"] and healthy["exposure"]["segment"]
    assert healthy["recovery"]["recovery_point"], "the recovery point reached is reported beside the exposure"
    assert healthy["report"]["exposure"] == healthy["exposure"]
    good = drill_metrics(metrics)
    assert good["doctorq_drill_last_run_status"] == 1 and good["doctorq_drill_rpo_limit_seconds"] == 60
    assert good["doctorq_drill_archive_lag_seconds"] == good["doctorq_drill_rpo_seconds"] == healthy["rpo_s"]
    assert {n for n in monitored_names() if n.startswith("doctorq_drill_")} <= set(good), "what the alerts use"

    original = server.query("SHOW archive_command")[0][0]
    wait = 8
    try:
        # archiving stopped (and pgbackrest check, which the drill runs to seal the window, gives up after 5 s)
        write_conf(bed["config"], {**bed["role_vars"], "pgbackrest_archive_timeout": 5})
        server.query("ALTER SYSTEM SET archive_command = '/bin/false'")
        server.query("SELECT pg_reload_conf()")
        time.sleep(0.5)
        stopped = dt.datetime.now(dt.timezone.utc)
        server.query(f"INSERT INTO {table} SELECT generate_series(11, 20)")  # committed, never archived
        server.query("SELECT pg_switch_wal()")  # a complete segment the archiver cannot push
        time.sleep(wait)
        lagging = run_module("pg_pitr_restore", pitr_args(bed, into="drill", drill={"max_rpo_seconds": 5},
                                                          notification={"metrics_dir": metrics}))
        assert lagging["failed"], "the exposure is over max_rpo_seconds"
        assert "drill.max_rpo_seconds=5" in lagging["msg"] and "check WAL archiving" in lagging["msg"], lagging["msg"]
        assert lagging["rpo_s"] >= wait and not lagging["exposure"]["idle"]
        newest = dt.datetime.fromisoformat(lagging["exposure"]["newest_archived_commit"].replace("Z", "+00:00"))
        assert newest < stopped, "the rows written since are not in the archive"
        # the recovery itself worked, to the end of what was archived: before the unarchived rows
        point = dt.datetime.fromisoformat(lagging["recovery"]["recovery_point"].replace("Z", "+00:00"))
        assert point < stopped
        bad = drill_metrics(metrics)
        assert bad["doctorq_drill_last_run_status"] == 0 and bad["doctorq_drill_rpo_limit_seconds"] == 5
        assert bad["doctorq_drill_archive_lag_seconds"] == bad["doctorq_drill_rpo_seconds"] == lagging["rpo_s"]
        assert bad["doctorq_drill_archive_lag_seconds"] > bad["doctorq_drill_rpo_limit_seconds"]
    finally:
        server.query("ALTER SYSTEM SET archive_command = %s", (original,))
        server.query("SELECT pg_reload_conf()")
        write_conf(bed["config"], bed["role_vars"])
    bed["engine"].check()  # archiving caught up: the unarchived rows reached the repository

    caught_up = run_module("pg_pitr_restore", pitr_args(bed, into="drill", drill={"max_rpo_seconds": 60}))
    assert not caught_up.get("failed"), caught_up.get("msg")
    assert caught_up["rpo_s"] < 30


def test_an_idle_cluster_has_nothing_to_lose(bed, base_backup, run_module):  # pylint: disable=redefined-outer-name
    """Nothing committed since the newest archived commit: exposure 0, however old that commit is."""
    first = run_module("pg_pitr_restore", pitr_args(bed, into="drill", drill={"max_rpo_seconds": 600}))
    assert not first.get("failed"), first.get("msg")
    time.sleep(3)  # the previous drill's own commits were archived by its pgbackrest check; nothing since
    idle = run_module("pg_pitr_restore", pitr_args(bed, into="drill", drill={"max_rpo_seconds": 1}))
    if idle["exposure"]["idle"]:
        assert not idle.get("failed"), idle.get("msg")
        assert idle["rpo_s"] == 0 and idle["exposure"]["age_seconds"] >= 3
    else:  # autovacuum/autoanalyze assigned an ID in between: then the age counts, honestly
        assert idle["rpo_s"] >= 3 and idle["failed"]
