"""The streaming pipeline without a server: a stage's exit status accepted or refused by the caller."""
from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config


def test_pipeline_accept_turns_a_known_status_into_a_success_and_sees_stderr(tmp_path):
    seen = []
    stage = [sys.executable, "-c", "import sys; sys.stdout.write('data'); sys.stderr.write('warned'); sys.exit(1)"]
    sink = pipeline.LocalSink(str(tmp_path / "out"))
    digest, _results = pipeline.run(
        [stage], dict(os.environ), [sink],
        accept=lambda index, status, err: seen.append((index, status, err)) or status == 1)
    assert seen == [(0, 1, "warned")] and digest.size == 4 and (tmp_path / "out").read_bytes() == b"data"
    sink = pipeline.LocalSink(str(tmp_path / "refused"))
    with pytest.raises(pipeline.StageFailed, match="status 1: warned"):
        pipeline.run([stage], dict(os.environ), [sink], accept=lambda index, status, err: False)
    assert not (tmp_path / "refused").exists() and not (tmp_path / ".refused.partial").exists()


def test_s3_parts_are_cut_from_the_written_chunks_exactly_once():
    # chunks of odd sizes; each part is the next part_size bytes, whatever the chunk boundaries
    sink = pipeline.S3Sink(None, S3Config(bucket="b"), "k", tags={})
    written = b"".join(bytes([n]) * n for n in range(1, 40))
    for n in range(1, 40):
        sink._chunks.append(bytes([n]) * n)  # pylint: disable=protected-access
        sink._held += n  # pylint: disable=protected-access
    parts = []
    while sink._held >= 100:  # pylint: disable=protected-access
        parts.append(sink._take(100))  # pylint: disable=protected-access
    assert [len(p) for p in parts] == [100] * (len(written) // 100)
    assert all(isinstance(p, bytes) for p in parts)
    assert b"".join(parts) + sink._rest() == written  # pylint: disable=protected-access
    assert sink._held == 0 and not sink._chunks  # pylint: disable=protected-access
