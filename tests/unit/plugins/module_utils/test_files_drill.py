"""The file-set drill's comparison of a restored tree with its manifest (no server needed)."""
from __future__ import annotations

import hashlib
import os

from ansible_collections.doctorq.backup.plugins.module_utils.drill import compare_with_manifest


def test_drill_comparison_with_the_manifest(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"abc")
    (tmp_path / "b.txt").write_bytes(b"hello")
    os.link(tmp_path / "b.txt", tmp_path / "d" / "b-link.txt")
    os.symlink("a.txt", tmp_path / "d" / "link")
    sample = [{"path": "d/a.txt", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}]
    fileset = {"files": 3, "symlinks": 1, "bytes": 8, "sample": sample}
    facts, problem = compare_with_manifest(str(tmp_path), fileset)
    assert problem is None and facts["found"] == {"files": 3, "symlinks": 1, "bytes": 8} and facts["sample"] == 1
    (tmp_path / "d" / "a.txt").write_bytes(b"abd")
    facts, problem = compare_with_manifest(str(tmp_path), {**fileset, "bytes": 9})
    assert "the manifest says 3, 1, 9" in problem and "1 of the 1 files" in problem and "d/a.txt" in problem
    assert len(facts["sample_differing"]) == 1
