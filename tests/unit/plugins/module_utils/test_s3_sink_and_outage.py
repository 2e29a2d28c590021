"""S3 checksums of multipart uploads, and a file-set backup going on when S3 is down.

The sink's choice between a full-object CRC32 and the SHA-256 composite is
tested against a small fake client that checks what a server checks (the
real servers are in tests/integration); the outage needs no server at all:
a closed port is a real unreachable endpoint.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline
from ansible_collections.doctorq.backup.plugins.module_utils.errors import StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.files_backup_job import FilesJob, run_files_backup
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config
from ansible_collections.doctorq.backup.plugins.module_utils.storage import LocalStore
from backup_support import closed_port

MiB = 1024 * 1024


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def crc_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


@pytest.mark.parametrize("sizes", [[5 * MiB, 5 * MiB, 123], [1], [0, 7], [16 * MiB, 3 * MiB + 1]])
def test_crc32_combine_matches_zlib_over_the_whole(sizes):
    parts = [os.urandom(n) for n in sizes]
    crc = 0
    for part in parts:
        crc = pipeline.crc32_combine(crc, zlib.crc32(part), len(part))
    assert crc == zlib.crc32(b"".join(parts))


class FakeS3:
    """What the sink relies on, checked the way S3 checks it.

    ``full_object``: "confirm" (AWS, recent SeaweedFS: the response echoes the
    checksum type), "silent" (an older server: it creates the upload and says
    nothing) or "refuse" (a server that rejects the header).
    """

    def __init__(self, full_object: str) -> None:
        self.full_object = full_object
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploads: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}

    def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("create", kw))
        upload_id = f"u{len(self.calls)}"
        if kw.get("ChecksumType") == "FULL_OBJECT":
            if self.full_object == "refuse":
                raise ClientError({"Error": {"Code": "InvalidArgument", "Message": "x-amz-checksum-type"}},
                                  "CreateMultipartUpload")
            self.uploads[upload_id] = {"kw": kw, "parts": {}}
            if self.full_object == "silent":
                return {"UploadId": upload_id}
            return {"UploadId": upload_id, "ChecksumAlgorithm": kw["ChecksumAlgorithm"], "ChecksumType": "FULL_OBJECT"}
        self.uploads[upload_id] = {"kw": kw, "parts": {}}
        return {"UploadId": upload_id, "ChecksumAlgorithm": kw["ChecksumAlgorithm"]}

    def upload_part(self, **kw: Any) -> dict[str, Any]:
        body = kw["Body"]
        if "ChecksumCRC32" in kw:
            assert kw["ChecksumCRC32"] == crc_b64(body), "BadDigest"
        if "ChecksumSHA256" in kw:
            assert kw["ChecksumSHA256"] == b64(hashlib.sha256(body).digest()), "BadDigest"
        self.uploads[kw["UploadId"]]["parts"][kw["PartNumber"]] = body
        return {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}  # nosec - an ETag

    def complete_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        upload = self.uploads.pop(kw["UploadId"])
        bodies = [upload["parts"][p["PartNumber"]] for p in kw["MultipartUpload"]["Parts"]]
        whole = b"".join(bodies)
        if upload["kw"].get("ChecksumType") == "FULL_OBJECT":
            assert kw["ChecksumType"] == "FULL_OBJECT"
            assert kw["ChecksumCRC32"] == crc_b64(whole), "the whole object's CRC32 does not match"
            checksum = {"ChecksumCRC32": kw["ChecksumCRC32"], "ChecksumType": "FULL_OBJECT"}
        else:
            composite = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in bodies)).digest()
            checksum = {"ChecksumSHA256": f"{b64(composite)}-{len(bodies)}", "ChecksumType": "COMPOSITE"}
        self.objects[kw["Key"]] = {"body": whole, "metadata": upload["kw"].get("Metadata", {}), **checksum}
        return {}

    def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("abort", kw))
        self.uploads.pop(kw["UploadId"], None)
        return {}

    def head_object(self, **kw: Any) -> dict[str, Any]:
        obj = self.objects[kw["Key"]]
        return {"ContentLength": len(obj["body"]), "Metadata": obj["metadata"],
                **{k: v for k, v in obj.items() if k.startswith("Checksum")}}


def stream_into(client: FakeS3, data: bytes) -> tuple[pipeline.S3Sink, dict[str, Any]]:
    sink = pipeline.S3Sink(client, S3Config(bucket="b", part_size_mb=5), "k", tags={"t": "v"},
                           metadata={"backup-id": "x"})
    hasher = pipeline.Hasher()
    for i in range(0, len(data), MiB):
        hasher.update(data[i:i + MiB])
        sink.write(data[i:i + MiB])
    return sink, sink.commit(hasher.digest())


def test_multipart_carries_a_full_object_crc32_where_the_server_confirms_it():
    data = os.urandom(12 * MiB + 5)
    client = FakeS3("confirm")
    sink, result = stream_into(client, data)
    assert sink.full_object
    assert result["checksum"] == {"algorithm": "CRC32", "type": "FULL_OBJECT", "value": crc_b64(data)}
    assert result["sha256_metadata"] is False
    assert client.objects["k"]["body"] == data and "sha256" not in client.objects["k"]["metadata"]
    assert [c for c, _kw in client.calls] == ["create"]


@pytest.mark.parametrize("server", ["silent", "refuse"])
def test_multipart_falls_back_to_the_sha256_composite_elsewhere(server):
    data = os.urandom(11 * MiB)
    client = FakeS3(server)
    sink, result = stream_into(client, data)
    assert not sink.full_object
    assert result["checksum"]["algorithm"] == "SHA256" and result["checksum"]["type"] == "COMPOSITE"
    assert result["checksum"]["value"] == client.objects["k"]["ChecksumSHA256"]
    assert client.objects["k"]["body"] == data
    # the upload the server created without confirming the checksum type is aborted, not left behind
    assert client.uploads == {}
    assert [c for c, _kw in client.calls] == (["create", "abort", "create"] if server == "silent" else ["create", "create"])


def test_small_object_single_put_is_unchanged():
    class Single(FakeS3):
        def put_object(self, **kw: Any) -> dict[str, Any]:
            assert kw["ChecksumSHA256"] == b64(hashlib.sha256(kw["Body"]).digest())
            self.objects[kw["Key"]] = {"body": kw["Body"], "metadata": kw["Metadata"],
                                       "ChecksumSHA256": kw["ChecksumSHA256"]}
            return {}

    data = os.urandom(3 * MiB)
    client = Single("confirm")
    _sink, result = stream_into(client, data)
    assert result["checksum"] == {"algorithm": "SHA256", "type": "FULL_OBJECT", "value": b64(hashlib.sha256(data).digest())}
    assert result["sha256_metadata"] is True
    assert client.objects["k"]["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_upload_file_refuses_a_file_that_no_longer_matches(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(6 * MiB))
    client = FakeS3("confirm")
    sink = pipeline.S3Sink(client, S3Config(bucket="b", part_size_mb=5), "k", tags={})
    with pytest.raises(Exception, match="no longer matches its manifest"):
        pipeline.upload_file(str(path), sink, 6 * MiB, "0" * 64)
    assert client.objects == {} and client.uploads == {}  # the started upload is aborted


# --------------------------------------------------------------------------
# a file-set backup when S3 is down: the same steps (backup_steps.Stores) as pg_backup


def test_files_backup_goes_on_locally_when_s3_is_down(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.conf").write_text("x = 1\n")
    backup_dir = tmp_path / "backups"
    s3 = {"bucket": "b", "endpoint_url": f"http://127.0.0.1:{closed_port()}", "access_key": "AK",
          "secret_key": "SK-secret", "max_attempts": 1}
    params = {"name": "app", "paths": [str(app)], "backup_dir": str(backup_dir), "s3": s3, "weekly": "always"}

    with pytest.raises(StorageError, match="cannot be reached.*A real run would still write the local backup"):
        run_files_backup(FilesJob.from_params(params), check_mode=True)
    assert not backup_dir.exists()

    result = run_files_backup(FilesJob.from_params(params))
    assert result["failed"]
    path = result["backup"]["path"]
    msg = result["msg"]
    assert "cannot be reached" in msg and f"The local backup {path} is complete and kept" in msg
    assert "catches up this one too" in msg and "SK-secret" not in msg  # even with no earlier backup in S3
    # complete on disk: daily and weekly listed, checksums pass, no S3 location claimed
    listed = LocalStore(str(backup_dir)).list("app", "file_set")
    assert sorted(m.kind for m in listed) == ["daily", "weekly"] and all(m.s3 is None for m in listed)
    done = subprocess.run(["sha256sum", "-c", os.path.basename(path) + ".sha256"], cwd=backup_dir,
                          capture_output=True, check=False)
    assert done.returncode == 0
    assert any("Going on without S3" in line for line in result["log"])
