"""The S3 parts of a directory dump stay within one memory budget, whatever the number of workers (issue 13).

Against the test bed's SeaweedFS (a real S3): a stand-in pg_dump (sh, as in
test_dirdump.py) writes many multi-part files at once, and dirdump uploads
them with more workers than parts fit in the budget. What the parts hold is
measured twice: by the budget's own count, and by tracemalloc (every byte
Python allocates: the parts, the read buffers, boto3's own), so the bound is
checked on the memory itself, not only on the bookkeeping.
"""
from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import dirdump, pipeline
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util

pytestmark = pytest.mark.integration  # talks to SeaweedFS

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 takes
FILES = 12
FILE_SIZE = 12 * MiB + 12345  # three parts: 5 + 5 + 2 MiB


def fake_pg_dump(directory: str) -> list[str]:
    """A stand-in pg_dump writing FILES files of random bytes, all at once (as pg_dump -Fd -j N does)."""
    script = (f'cd "$1" && for i in $(seq 1 {FILES}); do head -c {FILE_SIZE} /dev/urandom > "$i.dat" & done; wait '
              '&& printf toc > toc.dat')
    return ["/bin/sh", "-c", script, "pg_dump", directory]


def dump(tmp_path: str, s3_bucket: dict, name: str, budget: int, workers: int) -> tuple[dirdump.DirDump, dirdump.S3Upload, int]:
    """One dirdump.run to SeaweedFS; the result, the upload, and the most Python held above its start (tracemalloc)."""
    cfg = s3util.S3Config.from_params({**s3_bucket, "part_size_mb": PART // MiB})
    client = s3util.s3_client(cfg)
    upload = dirdump.S3Upload(client, cfg, f"budget/{name}", tags={}, budget=budget)
    directory = os.path.join(tmp_path, f"{name}.dir")
    client.list_objects_v2(Bucket=cfg.bucket, MaxKeys=1)  # boto3's first call (its models, its pool) before measuring
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = dirdump.run(fake_pg_dump(directory), {}, directory, upload, workers=workers)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, upload, peak


def test_parts_in_flight_stay_within_the_budget_with_many_workers(tmp_path, s3_bucket):
    workers = 8
    budget = 3 * PART  # fewer parts than workers: most workers wait for room
    result, upload, peak = dump(str(tmp_path), s3_bucket, "bounded", budget, workers)
    print(f"budget {budget / MiB:.0f} MiB, {workers} workers: parts {upload.budget.peak / MiB:.0f} MiB at most, "
          f"Python held {peak / MiB:.1f} MiB at most")

    assert len(result.files) == FILES + 1 and upload.error is None
    assert upload.budget.used == 0  # every part's room given back
    assert upload.budget.peak == budget  # the budget was the limit: the workers did contend for it ...
    # ... and the memory held stayed within it: the parts, plus one 1 MiB read buffer per worker, plus slack for
    # boto3's requests and the threads' frames (a few MiB; every byte of it counted by tracemalloc)
    assert peak <= budget + workers * pipeline.CHUNK + 4 * MiB, f"{peak / MiB:.1f} MiB held"

    # every object is whole and the file it came from
    client = upload.client
    for entry in result.files:
        body = client.get_object(Bucket=upload.cfg.bucket, Key=entry.s3["key"])["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (entry.size, entry.sha256), entry.name
    assert sum(f.s3["checksum"]["type"] == "FULL_OBJECT" or f.s3["checksum"]["value"].endswith("-3")
               for f in result.files) == FILES + 1


def test_without_a_tight_budget_the_same_dump_holds_more(tmp_path, s3_bucket):
    """The measurement above can fail: with room for every worker's parts, Python holds well over that bound."""
    workers = 8
    _result, upload, peak = dump(str(tmp_path), s3_bucket, "loose", 1 << 30, workers)
    print(f"no budget to speak of, {workers} workers: parts {upload.budget.peak / MiB:.0f} MiB at most, "
          f"Python held {peak / MiB:.1f} MiB at most")
    assert upload.budget.peak > 3 * PART
    assert peak > 3 * PART + workers * pipeline.CHUNK + 4 * MiB, f"{peak / MiB:.1f} MiB held"


def test_a_part_waits_for_room_and_gets_it_when_an_upload_ends():
    budget = pipeline.MemoryBudget(10)
    budget.take(6)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (budget.take(6), got.set()))
    waiter.start()
    assert not got.wait(0.2)  # 6 + 6 > 10: waits
    budget.give(6)
    assert got.wait(5)
    waiter.join()
    assert (budget.used, budget.peak) == (6, 6)
    budget.give(6)
    budget.take(25)  # larger than the limit: let through alone, never stuck
    assert (budget.used, budget.peak) == (25, 25)
