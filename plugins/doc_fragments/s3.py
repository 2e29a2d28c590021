# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the nested ``s3`` option; edit together with module_utils/s3.py:s3_argument_spec."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  s3:
    description:
      - Where the backups live in S3 or an S3-compatible store (MinIO, SeaweedFS, Ceph radosgw).
      - Credentials fall back to the usual AWS environment variables, then to the default credential chain
        (profile, instance role). They are never logged or returned.
    type: dict
    suboptions:
      bucket:
        description:
          - Bucket name only (no C(s3://), no path; a folder goes in O(s3.prefix)). An empty or malformed name fails
            before any work.
        type: str
        required: true
      prefix:
        description:
          - Key prefix under which this collection writes; nothing outside it is ever listed or deleted.
          - Plain C(a/b) form - a leading C(/), a C(..) or C(.) segment or an empty segment (C(//)) fails before any
            work (S3 would keep them as part of the key).
        type: str
        default: postgresql
      endpoint_url:
        description:
          - URL of an S3-compatible server, for example C(https://minio.example.com:9000). Omit for AWS.
          - Must be an C(http://) or C(https://) URL with a host (checked before any work).
        type: str
      region:
        description:
          - Region of the bucket. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION), then V(us-east-1).
        type: str
      access_key:
        description: Access key id. Falls back to E(AWS_ACCESS_KEY_ID).
        type: str
      secret_key:
        description: Secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY).
        type: str
      session_token:
        description: Session token for temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
        type: str
      profile:
        description: Named profile from the AWS shared credentials file. Falls back to E(AWS_PROFILE).
        type: str
      validate_certs:
        description: Verify the server's TLS certificate.
        type: bool
        default: true
      addressing_style:
        description: V(auto) uses path-style addressing when O(s3.endpoint_url) is set (what most S3-compatible servers need).
        type: str
        choices: [auto, path, virtual]
        default: auto
      storage_class:
        description: Storage class of the objects written. Lifecycle rules (M(doctorq.backup.s3_lifecycle)) move them later.
        type: str
        choices: [STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, REDUCED_REDUNDANCY]
        default: STANDARD
      encryption:
        description: Server-side encryption of the objects written.
        type: str
        choices: [AES256, aws:kms, none]
        default: AES256
      kms_key_id:
        description: KMS key id or alias, required with O(s3.encryption=aws:kms).
        type: str
      part_size_mb:
        description: Size of each multipart upload part in MiB (5 to 512). Memory use is about three parts.
        type: int
        default: 16
      max_attempts:
        description: Attempts per S3 request, the first one included, with jittered backoff between them.
        type: int
        default: 5
      timeout:
        description:
          - Seconds to wait for the S3 endpoint to accept a connection (at most 10 of them) and for each answer.
          - With O(s3.max_attempts) it bounds how long an endpoint that accepts connections and never answers can hold
            a run, about O(s3.max_attempts) times O(s3.timeout) per request; a backup then goes on without S3, keeps the
            local copy and fails naming S3.
        type: int
        default: 120
"""
