# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup bucket's declared settings without a server: what is refused, what is implied."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle_bucket as lb
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError


@pytest.mark.parametrize(("params", "expected"), [
    ({"object_lock": True, "versioning": False}, "object_lock needs versioning"),
    ({"default_retention": {"mode": "GOVERNANCE", "days": 1}}, "default_retention needs object_lock: true"),
    ({"object_lock": True, "default_retention": {"mode": "GOVERNANCE"}}, "exactly one of days or years"),
    ({"object_lock": True, "default_retention": {"mode": "GOVERNANCE", "days": 0}}, "days must be >= 1"),
    ({"encryption": "DES"}, "must be AES256 or aws:kms"),
])
def test_bucket_spec_errors(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        lb.BucketSpec.from_params(params)


def test_object_lock_implies_versioning() -> None:
    spec = lb.BucketSpec.from_params({"object_lock": True, "default_retention": {"mode": "compliance", "years": 1}})
    assert spec.wants_versioning is True
    assert lb.wanted_bucket(spec) == {"exists": True, "versioning": True, "object_lock": True,
                                      "default_retention": {"mode": "COMPLIANCE", "years": 1}}
    assert lb.BucketSpec.from_params(None) is None
