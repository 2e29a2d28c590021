"""The streaming pipeline without a server: a stage's exit status accepted or refused by the caller (S3Sink: tests/integration/test_pipeline_s3.py)."""
from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline


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
