"""S3Sink against the test bed's SeaweedFS: parts cut at the part size whatever the writes, from a reused buffer."""
from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util

pytestmark = pytest.mark.integration  # talks to SeaweedFS

MiB = 1024 * 1024


def sink_for(s3_bucket: dict, key: str, budget: pipeline.MemoryBudget | None = None,
             size: int | None = None) -> pipeline.S3Sink:
    cfg = s3util.S3Config.from_params({**s3_bucket, "part_size_mb": 5})
    return pipeline.S3Sink(s3util.s3_client(cfg), cfg, key, tags={}, budget=budget, size=size)


@pytest.mark.parametrize("size", [0, 123, 5 * MiB, 12 * MiB + 7])
@pytest.mark.parametrize("told", [None, 0, -1, +1], ids=["size-unknown", "size-told", "told-less", "told-more"])
def test_an_object_is_what_was_written_in_odd_pieces_from_one_reused_buffer(s3_bucket, size, told):
    """Whatever the pieces, and whether the sink was told the size (parts made at their size), right or wrong."""
    data = os.urandom(size)
    budget = pipeline.MemoryBudget(10 * MiB)
    sink = sink_for(s3_bucket, f"odd/{size}/{told}", budget, None if told is None else max(0, size + told * 3 * MiB))
    buffer = bytearray(3 * MiB)
    hasher = pipeline.Hasher()
    offset, step = 0, 1
    while offset < size:
        piece = data[offset:offset + step]
        buffer[:len(piece)] = piece
        sink.write(memoryview(buffer)[:len(piece)])
        hasher.update(piece)
        buffer[:len(piece)] = b"\0" * len(piece)  # the sink copied what it keeps: overwriting the buffer is harmless
        offset += len(piece)
        step = step * 7 % (3 * MiB) + 1  # 1, 8, 57, ...: pieces that cross the part boundaries anywhere
    stored = sink.commit(hasher.digest())
    assert "error" not in stored and budget.used == 0
    got = sink.client.get_object(Bucket=sink.cfg.bucket, Key=stored["key"])["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    multipart = stored["checksum"]["algorithm"] == "CRC32" or stored["checksum"]["type"] == "COMPOSITE"
    assert multipart == (size >= 5 * MiB)  # one PUT below one part; from one whole part on, a multipart upload
    if stored["checksum"]["type"] == "COMPOSITE":
        assert stored["checksum"]["value"].endswith(f"-{-(-size // (5 * MiB))}")


def test_an_aborted_sink_gives_back_its_room_and_leaves_no_upload(s3_bucket):
    budget = pipeline.MemoryBudget(10 * MiB)
    sink = sink_for(s3_bucket, "aborted", budget)
    sink.write(os.urandom(7 * MiB))  # one part up, one being filled
    sink.abort()
    assert budget.used == 0
    uploads = sink.client.list_multipart_uploads(Bucket=sink.cfg.bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == "aborted"] == []
