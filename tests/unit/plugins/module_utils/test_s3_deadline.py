# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 4 for S3: a server that trickles (a byte every second) costs a call its deadline, not the night.

The per-read timeouts botocore takes never fire against such a server; the
client ``s3.s3_client`` builds bounds every call and every body read.
"""
from __future__ import annotations

import time

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.errors import StorageError
from backup_support import Trickle


def config(url: str) -> s3util.S3Config:
    return s3util.S3Config(bucket="backups", endpoint_url=url, access_key="AK", secret_key="SK", timeout=3,
                           max_attempts=1)


@pytest.fixture(name="trickle")
def fixture_trickle():
    server = Trickle(interval=1.0)
    yield server
    server.close()


@pytest.fixture(name="trickling_body")
def fixture_trickling_body():
    server = Trickle(interval=1.0, headers_at_once=True)
    yield server
    server.close()


def test_a_call_answered_a_byte_at_a_time_fails_at_its_deadline(trickle):
    cfg = config(trickle.url)
    assert s3util.call_deadline(cfg) == 6  # one attempt: connect (3) + read (3)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"S3 ListObjectsV2 did not finish within 6 s: .*s3\.timeout"):
        s3util.s3_client(cfg).list_objects_v2(Bucket="backups", Prefix="postgresql/")
    assert 5.5 < time.monotonic() - started < 12
    assert trickle.connections == 1


def test_paginators_are_bounded_too(trickle):
    started = time.monotonic()
    with pytest.raises(StorageError, match="did not finish within 6 s"):
        for _page in s3util.s3_client(config(trickle.url)).get_paginator("list_objects_v2").paginate(Bucket="backups"):
            pass
    assert time.monotonic() - started < 12


def test_a_body_that_trickles_fails_when_a_chunk_does_not_arrive_in_time(trickling_body):
    cfg = config(trickling_body.url)
    body = s3util.s3_client(cfg).get_object(Bucket="backups", Key="postgresql/shop/x.dump")["Body"]
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"GetObject \(reading the body\) did not go on for 7 s"):
        while body.read(1 << 20):
            pass
    assert time.monotonic() - started < 15
    body.close()


def test_the_deadline_grows_with_attempts_backoff_and_body():
    cfg = s3util.S3Config(bucket="b", timeout=120, max_attempts=5)
    # 5 attempts of connect 10 + read 120, backoffs of at most 2, 4, 8 and 16 s
    assert s3util.call_deadline(cfg) == 5 * 130 + 30
    assert s3util.call_deadline(cfg, 64 << 20) == 5 * (130 + 256) + 30  # a 64 MiB part at 256 KiB/s
