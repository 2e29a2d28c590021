# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup bucket itself, as declared: created if missing, versioning, Object Lock, default encryption.

``s3_lifecycle``'s ``ensure_bucket``. Only the declared aspects are read and
converged (a server that lacks an undeclared feature is never asked about
it), in the order S3 needs, then read back to prove the server took them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.lifecycle_rules import is_count
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_errors


@dataclasses.dataclass(frozen=True)
class BucketSpec:
    """What a backup bucket must be; None everywhere means "leave as it is"."""

    versioning: bool | None = None
    encryption: str | None = None
    kms_key_id: str | None = None
    object_lock: bool | None = None
    retention_mode: str | None = None
    retention_days: int | None = None
    retention_years: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, kms_key_id: str | None = None) -> "BucketSpec | None":
        if params is None:
            return None
        retention = params.get("default_retention") or {}
        spec = cls(
            versioning=params.get("versioning"),
            encryption=params.get("encryption"),
            kms_key_id=kms_key_id if params.get("encryption") == "aws:kms" else None,
            object_lock=params.get("object_lock"),
            retention_mode=(retention.get("mode") or "").upper() or None,
            retention_days=retention.get("days"),
            retention_years=retention.get("years"),
        )
        errors = spec.validate()
        if errors:
            raise ConfigError("invalid ensure_bucket, nothing was changed: " + " ".join(errors))
        return spec

    def validate(self) -> list[str]:
        errors = []
        if self.encryption not in (None, "AES256", "aws:kms"):
            errors.append(f"ensure_bucket.encryption must be AES256 or aws:kms, got {self.encryption!r}.")
        if self.object_lock and self.versioning is False:
            errors.append("ensure_bucket.object_lock needs versioning: set versioning to true (or leave it unset).")
        if self.retention_mode is not None:
            if not self.object_lock:
                errors.append("ensure_bucket.default_retention needs object_lock: true.")
            if self.retention_mode not in ("GOVERNANCE", "COMPLIANCE"):
                errors.append(f"ensure_bucket.default_retention.mode must be GOVERNANCE or COMPLIANCE, got "
                              f"{self.retention_mode!r}.")
            if (self.retention_days is None) == (self.retention_years is None):
                errors.append("ensure_bucket.default_retention needs exactly one of days or years.")
            for name, value in (("days", self.retention_days), ("years", self.retention_years)):
                if value is not None and not is_count(value, 1):
                    errors.append(f"ensure_bucket.default_retention.{name} must be >= 1, got {value!r}.")
        return errors

    @property
    def wants_versioning(self) -> bool | None:
        """Object Lock implies versioning (S3 requires it), so it is asked for when lock is."""
        return True if self.object_lock else self.versioning

    def retention(self) -> dict[str, Any] | None:
        if self.retention_mode is None:
            return None
        out: dict[str, Any] = {"mode": self.retention_mode}
        if self.retention_days is not None:
            out["days"] = self.retention_days
        if self.retention_years is not None:
            out["years"] = self.retention_years
        return out


def read_bucket(client: Any, bucket: str, spec: BucketSpec, where: str) -> dict[str, Any]:
    """The declared aspects only: a server that lacks an undeclared feature is never asked about it."""
    with s3_errors("HeadBucket", where, expected=("404", "NoSuchBucket", "NotFound")) as missing:
        client.head_bucket(Bucket=bucket)
    if missing:
        return {"exists": False}
    state: dict[str, Any] = {"exists": True}
    if spec.wants_versioning is not None:
        with s3_errors("GetBucketVersioning", where):
            state["versioning"] = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    if spec.encryption is not None:
        state["encryption"] = None  # unless the bucket has a default encryption
        with s3_errors("GetBucketEncryption", where, expected=("ServerSideEncryptionConfigurationNotFoundError",)):
            rules = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
            default = (rules[0] if rules else {}).get("ApplyServerSideEncryptionByDefault") or {}
            state["encryption"] = default.get("SSEAlgorithm")
            if spec.kms_key_id:
                state["kms_key_id"] = default.get("KMSMasterKeyID")
    if spec.object_lock is not None:
        conf: dict[str, Any] = {}  # unless the bucket has Object Lock
        with s3_errors("GetObjectLockConfiguration", where, expected=("ObjectLockConfigurationNotFoundError",)):
            conf = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration") or {}
        state["object_lock"] = conf.get("ObjectLockEnabled") == "Enabled"
        if spec.retention_mode is not None:
            found = (conf.get("Rule") or {}).get("DefaultRetention") or {}
            retention = {"mode": found.get("Mode")} if found.get("Mode") else None
            if retention is not None:
                for key in ("Days", "Years"):
                    if found.get(key):  # moto answers Years: 0 for "not set"
                        retention[key.lower()] = found[key]
            state["default_retention"] = retention
    return state


def wanted_bucket(spec: BucketSpec) -> dict[str, Any]:
    """The declared state in the shape read_bucket returns."""
    state: dict[str, Any] = {"exists": True}
    if spec.wants_versioning is not None:
        state["versioning"] = spec.wants_versioning
    if spec.encryption is not None:
        state["encryption"] = spec.encryption
        if spec.kms_key_id:
            state["kms_key_id"] = spec.kms_key_id
    if spec.object_lock is not None:
        state["object_lock"] = spec.object_lock
        if spec.retention_mode is not None:
            state["default_retention"] = spec.retention()
    return state


@dataclasses.dataclass
class BucketOutcome:
    changed: bool
    created: bool
    before: dict[str, Any]
    after: dict[str, Any]
    actions: list[str]


def ensure_bucket(client: Any, cfg: S3Config, spec: BucketSpec, check_mode: bool = False) -> BucketOutcome:
    """Create the bucket if missing and converge the declared properties, in the order S3 needs.

    Versioning comes before Object Lock (lock requires it), and Object Lock is
    asked for at creation, the only moment every S3 server accepts it.
    """
    where = cfg.where
    before = read_bucket(client, cfg.bucket, spec, where)
    want = wanted_bucket(spec)
    if before.get("object_lock") and spec.object_lock is False:
        raise ConfigError(f"Object Lock is enabled on {where} and can never be disabled; set "
                          "ensure_bucket.object_lock to true or leave it unset.")
    if before.get("object_lock") and spec.versioning is False:
        raise ConfigError(f"{where} has Object Lock, which keeps versioning on; set ensure_bucket.versioning to "
                          "true or leave it unset.")
    actions: list[str] = []
    if not before["exists"]:
        actions.append("create")
        if spec.object_lock:
            actions.append("object_lock")
    if spec.wants_versioning is not None:
        # a new bucket starts unversioned, or versioned when created with Object Lock
        has_versioning = before.get("versioning", False) if before["exists"] else bool(spec.object_lock)
        if has_versioning != spec.wants_versioning:
            actions.append("versioning")
    if spec.object_lock and before["exists"] and not before.get("object_lock"):
        actions.append("object_lock")
    if "default_retention" in want and before.get("default_retention") != want["default_retention"]:
        actions.append("default_retention")
    if spec.encryption is not None and (before.get("encryption") != spec.encryption
                                        or before.get("kms_key_id") != want.get("kms_key_id")):
        actions.append("encryption")
    if not actions or check_mode:
        return BucketOutcome(bool(actions), "create" in actions, before, want if actions else before, actions)

    if "create" in actions:
        kwargs: dict[str, Any] = {"Bucket": cfg.bucket}
        if cfg.region and cfg.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": cfg.region}
        if spec.object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        with s3_errors("CreateBucket", where, expected=("BucketAlreadyOwnedByYou",)):
            client.create_bucket(**kwargs)
    if "versioning" in actions:
        with s3_errors("PutBucketVersioning", where):
            client.put_bucket_versioning(Bucket=cfg.bucket, VersioningConfiguration={
                "Status": "Enabled" if spec.wants_versioning else "Suspended"})
    if "object_lock" in actions or "default_retention" in actions:
        conf: dict[str, Any] = {"ObjectLockEnabled": "Enabled"}
        retention = spec.retention()
        if retention is not None:
            conf["Rule"] = {"DefaultRetention": {k.capitalize(): v for k, v in retention.items()}}
        if before["exists"] or retention is not None:
            with s3_errors("PutObjectLockConfiguration", where):
                client.put_object_lock_configuration(Bucket=cfg.bucket, ObjectLockConfiguration=conf)
    if "encryption" in actions:
        default: dict[str, Any] = {"SSEAlgorithm": spec.encryption}
        if spec.kms_key_id:
            default["KMSMasterKeyID"] = spec.kms_key_id
        with s3_errors("PutBucketEncryption", where):
            client.put_bucket_encryption(Bucket=cfg.bucket, ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": default}]})
    after = read_bucket(client, cfg.bucket, spec, where)
    if after != want:
        raise StorageError(f"{where} did not take the declared bucket settings: wanted {json.dumps(want, sort_keys=True)}, "
                           f"it reports {json.dumps(after, sort_keys=True)}; check that the server supports them.",
                           code="BucketMismatch")
    return BucketOutcome(True, "create" in actions, before, after, actions)
