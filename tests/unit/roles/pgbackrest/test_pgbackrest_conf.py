"""The pgbackrest role's pgbackrest.conf as rendered from its template: the repository, the cluster, the defaults."""
from __future__ import annotations

import configparser

import pytest

from role_support import render_role_template


def rendered(s3: dict, ca: str = "", cipher: str = "", **extra) -> dict[str, dict[str, str]]:
    """``{section: {option: value}}`` of the role's pgbackrest.conf for these variables (stanza pg15, host db1)."""
    variables = dict(pgbackrest_s3=s3, pgbackrest_ca_file=ca, pgbackrest_cipher_pass=cipher, inventory_hostname="db1",
                     ansible_managed="managed", pgbackrest_stanza="pg15", **extra)
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keep the case
    parser.read_string(render_role_template("pgbackrest", "pgbackrest.conf.j2", variables))
    return {section: dict(parser.items(section, raw=True)) for section in parser.sections()}


# What every configuration of the role's defaults holds besides the repository's address and credentials:
# time-based retention of 7 days, bundling, asynchronous archiving from the spool, zstd, fast start.
DEFAULTS = {
    "repo1-type": "s3", "repo1-path": "/pgbackrest/db1", "repo1-s3-bucket": "b",
    "repo1-retention-full-type": "time", "repo1-retention-full": "7", "repo1-bundle": "y",
    "process-max": "2", "compress-type": "zst", "compress-level": "3", "archive-async": "y", "archive-timeout": "60",
    "spool-path": "/var/spool/pgbackrest", "log-path": "/var/log/pgbackrest", "log-level-file": "info",
    "lock-path": "/tmp/pgbackrest", "start-fast": "y",
}
CLUSTER = {"pg1-path": "/var/lib/postgresql/15/main", "pg1-port": "5432", "pg1-socket-path": "/var/run/postgresql"}

CASES = {
    # an S3-compatible server on its own port: path style, its host and port, a CA file; keys and a cipher
    "s3-compatible": (
        dict(s3=dict(bucket="b", endpoint_url="https://s3.internal:9000", region="eu-west-1", access_key="AK",
                     secret_key="SK", encryption="AES256"), ca="/ca.pem", cipher="cp"),
        {"repo1-s3-endpoint": "s3.internal", "repo1-s3-region": "eu-west-1", "repo1-s3-uri-style": "path",
         "repo1-storage-port": "9000", "repo1-storage-ca-file": "/ca.pem", "repo1-s3-key": "AK",
         "repo1-s3-key-secret": "SK", "repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": "cp"}),
    # AWS without an endpoint: the regional endpoint, host style; no keys = the instance's IAM role; SSE-KMS
    "aws-iam-kms": (
        dict(s3=dict(bucket="b", region="us-east-2", encryption="aws:kms", kms_key_id="alias/k", validate_certs=False)),
        {"repo1-s3-endpoint": "s3.us-east-2.amazonaws.com", "repo1-s3-region": "us-east-2", "repo1-s3-uri-style": "host",
         "repo1-storage-verify-tls": "n", "repo1-s3-key-type": "auto", "repo1-s3-kms-key-id": "alias/k"}),
    # virtual-host addressing asked for, the default port (none written), a session token
    "virtual-token": (
        dict(s3=dict(bucket="b", endpoint_url="https://minio.example", access_key="AK", secret_key="SK",
                     session_token="ST", addressing_style="virtual")),
        {"repo1-s3-endpoint": "minio.example", "repo1-s3-region": "us-east-1", "repo1-s3-uri-style": "host",
         "repo1-s3-key": "AK", "repo1-s3-key-secret": "SK", "repo1-s3-token": "ST"}),
}


@pytest.mark.parametrize("case", CASES)
def test_repository_and_cluster_settings(case):
    variables, repository = CASES[case]
    assert rendered(**variables) == {"global": {**DEFAULTS, **repository}, "pg15": CLUSTER}


def test_role_variables_reach_the_file_and_optional_settings_drop_out():
    conf = rendered(dict(bucket="b", endpoint_url="https://s3.internal:443", access_key="AK", secret_key="SK"),
                    pgbackrest_retention_days=30, pgbackrest_bundle=False, pgbackrest_archive_async=False,
                    pgbackrest_archive_push_queue_max="4GiB", pgbackrest_pg_port=5433, pgbackrest_pg_socket_path="")
    g = conf["global"]
    assert "repo1-storage-port" not in g, "443 is pgBackRest's default"
    assert (g["repo1-retention-full"], g["archive-async"], g["archive-push-queue-max"]) == ("30", "n", "4GiB")
    assert "repo1-bundle" not in g
    assert conf["pg15"] == {"pg1-path": "/var/lib/postgresql/15/main", "pg1-port": "5433"}
