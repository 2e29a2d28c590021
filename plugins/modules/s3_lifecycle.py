#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin face of module_utils/lifecycle.py: parse options, call the engine, shape the result."""

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_lifecycle
short_description: Manage the whole lifecycle configuration of an S3 bucket as one declared state
version_added: 0.1.0
description:
  - Declares every lifecycle rule of a bucket (transitions between storage classes, expiration, noncurrent
    versions, abort of incomplete multipart uploads) and makes the bucket hold exactly that.
  - Reads the current configuration, brings it and the declaration to one canonical form (order of rules and
    transitions, defaults, case of storage classes, the several ways S3 spells an empty or a single filter) and
    writes only when they differ, so a second identical run reports C(changed=false).
    After writing it reads the configuration back and fails (putting the previous one back) if the server stored
    something else than what was sent.
  - Validates the rules before any request, with messages that say what to change, and warns about
    valid but costly schedules (leaving GLACIER or GLACIER_IR before 90 days, DEEP_ARCHIVE before 180 days,
    STANDARD_IA or ONEZONE_IA before 30 days).
  - Works with AWS S3 and S3-compatible servers through O(s3.endpoint_url). When the server answers
    C(NotImplemented) (SeaweedFS does for transitions), O(on_unsupported) decides between failing and applying
    what the server supports.
  - O(preset=seed) adds the rules of the original backup scripts' policy for the keys M(doctorq.backup.pg_backup)
    writes under O(s3.prefix).
  - O(ensure_bucket) optionally creates the bucket and converges versioning, default encryption and Object Lock.
    Anything else about a bucket (policy, public access block, tags, ownership) is left to M(amazon.aws.s3_bucket).
  - O(s3) is required; O(s3.bucket) names the bucket to manage.
extends_documentation_fragment:
  - doctorq.backup.common
  - doctorq.backup.s3
attributes:
  check_mode:
    description:
      - Reads only, and predicts C(changed) and the resulting rules.
      - The prediction assumes the server implements the whole declaration; with O(on_unsupported=warn) on a
        server that refuses part of it, only a real run can learn what is left out.
  diff_mode:
    support: full
    description: Shows the rules (and, with O(ensure_bucket), the declared bucket settings) before and after.
  platform:
    support: full
    platforms: posix
    description: Runs wherever boto3 can reach the S3 endpoint (usually the controller or a backup host); keeps no local state.
requirements:
  - boto3 >= 1.34
notes:
  - S3 replaces a bucket's lifecycle document as a whole. With O(purge=true) (the default) this task owns the
    bucket's lifecycle; let several tasks or prefixes share a bucket with O(purge=false), each declaring its own
    rule ids.
  - Lifecycle rules act on object age in whole days, counted by S3 from the object's creation (rounded to the
    next midnight UTC); S3 runs them asynchronously, typically within a day or two.
  - On AWS, objects smaller than 128 KiB are not transitioned by default (C(TransitionDefaultMinimumObjectSize));
    the checksum files and manifests of a backup therefore stay in STANDARD and readable while the dumps move to
    archive classes. This module leaves that bucket setting at its default.
  - Objects in GLACIER or DEEP_ARCHIVE must be restored before they can be read, which takes hours;
    M(doctorq.backup.pg_restore_safe) handles that.
options:
  rules:
    description:
      - The lifecycle rules, each identified by O(rules[].id).
      - With O(purge=true), rules of the bucket that are not declared here (or by O(preset)) are removed; an empty
        list then removes the whole lifecycle configuration.
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: Unique id of the rule (at most 255 characters); rules are matched by it.
        type: str
        required: true
      status:
        description: A disabled rule is kept in the configuration but not applied.
        type: str
        choices: [enabled, disabled]
        default: enabled
      filter:
        description:
          - Which objects the rule applies to; all given criteria must match. Omit for the whole bucket.
        type: dict
        suboptions:
          prefix:
            description: Key prefix, for example V(postgresql/). Include the trailing slash to match a folder only.
            type: str
          tags:
            description: Object tags that must all be present with these values.
            type: dict
          object_size_greater_than:
            description: Only objects larger than this many bytes.
            type: int
          object_size_less_than:
            description: Only objects smaller than this many bytes.
            type: int
      transitions:
        description:
          - Moves of current object versions to other storage classes, in any order (they are sorted by day).
          - Classes must get colder as days increase, in the order STANDARD_IA, INTELLIGENT_TIERING, ONEZONE_IA,
            GLACIER_IR, GLACIER, DEEP_ARCHIVE. STANDARD_IA and ONEZONE_IA need O(rules[].transitions[].days) of
            30 or more, and the next transition at least 30 days later.
        type: list
        elements: dict
        suboptions:
          days:
            description: Age of the object in days (0 or more) when it moves.
            type: int
            required: true
          storage_class:
            description:
              - Target class, case-insensitive. One of V(STANDARD_IA), V(ONEZONE_IA), V(INTELLIGENT_TIERING),
                V(GLACIER_IR), V(GLACIER), V(DEEP_ARCHIVE).
            type: str
            required: true
      expiration_days:
        description: Delete current object versions at this age in days (after the last transition).
        type: int
      expired_object_delete_marker:
        description:
          - In a versioned bucket, remove delete markers that no longer have any noncurrent version behind them.
          - Cannot be combined with O(rules[].expiration_days) or with a tag or size filter.
        type: bool
        default: false
      noncurrent_transitions:
        description: Moves of noncurrent versions, counted in days since they became noncurrent.
        type: list
        elements: dict
        suboptions:
          days:
            description: Days since the version became noncurrent.
            type: int
            required: true
          storage_class:
            description: Target class, case-insensitive; same choices as O(rules[].transitions[].storage_class).
            type: str
            required: true
          newer_versions:
            description: Only versions that have at least this many newer noncurrent versions (1 to 100).
            type: int
      noncurrent_expiration_days:
        description: Delete noncurrent versions this many days after they became noncurrent.
        type: int
      noncurrent_newer_versions:
        description: With O(rules[].noncurrent_expiration_days), keep this many newest noncurrent versions (1 to 100).
        type: int
      abort_incomplete_multipart_days:
        description:
          - Abort multipart uploads not completed this many days after they started, freeing their billed parts.
          - Cannot be combined with a tag or size filter.
        type: int
  preset:
    description:
      - Add a ready set of rules to O(rules).
      - V(seed) reproduces the policy of the original backup scripts for the layout M(doctorq.backup.pg_backup)
        writes under O(s3.prefix) (default V(postgresql)), dailies under C(<prefix>/<db>/) and weeklies under
        C(<prefix>/weekly/<db>/). Every object there is tagged C(doctorq-backup-kind) (V(daily) or V(weekly)) and
        C(doctorq-backup-part) (V(data) for the dump, V(meta) for checksum files and manifests); each rule filters
        on C(<prefix>/) and both tags.
      - The tags tell the kinds apart, so O(s3.prefix) may be the common parent of several backup prefixes; with
        V(doctorq), the same five rules cover the backups of hosts writing under C(doctorq/db1) and C(doctorq/db2),
        and the file sets M(doctorq.backup.files_backup) writes below them.
      - "C(doctorq-<prefix>-daily-data): daily dumps move to GLACIER after 7 days and expire after 30 days."
      - "C(doctorq-<prefix>-daily-meta): daily checksum files and manifests stay in STANDARD (readable for listing)
        and expire after 30 days, with their dump."
      - "C(doctorq-<prefix>-weekly-data): weekly dumps move to GLACIER after 7 days, to DEEP_ARCHIVE after 30 days,
        and expire after 365 days."
      - "C(doctorq-<prefix>-weekly-meta): weekly checksum files and manifests stay in STANDARD and expire after
        365 days."
      - "C(doctorq-<prefix>-abort-multipart): multipart uploads under C(<prefix>/) still incomplete after 7 days are
        aborted (not in the seed; a killed upload otherwise leaves billed, invisible parts)."
      - C(<prefix>) in the ids is O(s3.prefix) with characters other than letters, digits, C(_), C(.) and C(-)
        replaced by C(-), so several prefixes can share a bucket with O(purge=false).
      - The seed's schedule keeps objects in GLACIER for 23 days, below its 90-day minimum billed duration, so the
        module warns about it on every run; declare your own O(rules) to avoid that charge.
      - Preset rule ids must not be repeated in O(rules).
    type: str
    choices: [seed]
  purge:
    description:
      - V(true) makes the bucket hold exactly the declared rules, removing the others.
      - V(false) adds or replaces the declared rules by id and keeps every other rule of the bucket as it is.
    type: bool
    default: true
  on_unsupported:
    description:
      - What to do when the server answers C(NotImplemented) to the configuration (SeaweedFS does for
        transitions; nothing is changed by a refused request).
      - V(fail) fails, naming the parts of the declaration that such servers lack (transitions).
      - V(warn) applies the configuration without storage class transitions and/or noncurrent version transitions
        (as few of them left out as the server needs), drops rules left with no action, warns, and lists what was
        left out in RV(unsupported). Only actions are ever left out, never a filter, so nothing is deleted that the
        declaration would keep.
    type: str
    choices: [fail, warn]
    default: fail
  ensure_bucket:
    description:
      - Create the bucket if it does not exist and converge the settings given here. Omit to require an existing
        bucket and leave its settings alone; unset suboptions are left as they are.
      - Built in (rather than requiring M(amazon.aws.s3_bucket)) so a backup bucket is declared with the same O(s3)
        connection and credentials as the backups, works with S3-compatible servers (tested with SeaweedFS), and
        gets Object Lock at creation, the only moment every S3 server allows it.
      - A bucket is never deleted, and Object Lock is never disabled (S3 cannot).
    type: dict
    suboptions:
      versioning:
        description: V(true) enables versioning, V(false) suspends it. Implied by O(ensure_bucket.object_lock=true).
        type: bool
      encryption:
        description: Default server-side encryption of the bucket. V(aws:kms) uses O(s3.kms_key_id) when set.
        type: str
        choices: [AES256, aws:kms]
      object_lock:
        description:
          - Enable S3 Object Lock so object versions can be protected from deletion (WORM).
          - Set at creation; on an existing bucket the module asks the server to enable it, which AWS accepts for
            versioned buckets and some S3-compatible servers refuse.
        type: bool
      default_retention:
        description: Default retention applied to every new object version. Needs O(ensure_bucket.object_lock=true).
        type: dict
        suboptions:
          mode:
            description:
              - V(GOVERNANCE) can be bypassed by users with special permission; V(COMPLIANCE) cannot be shortened or
                removed by anyone, including the root account, until it expires.
            type: str
            required: true
            choices: [GOVERNANCE, COMPLIANCE]
          days:
            description: Retention in days. Exactly one of O(ensure_bucket.default_retention.days) and
              O(ensure_bucket.default_retention.years).
            type: int
          years:
            description: Retention in years.
            type: int
seealso:
  - module: amazon.aws.s3_bucket
    description: For bucket policies, public access blocks, tags and other bucket settings.
  - name: Managing your storage lifecycle (AWS)
    description: How S3 lifecycle rules, transitions and their constraints work.
    link: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lifecycle-mgmt.html
"""

EXAMPLES = r"""
- name: Apply the seed's archive policy to the backups under postgresql/
  doctorq.backup.s3_lifecycle:
    s3:
      bucket: doctorq-backups
    preset: seed

- name: Same, on SeaweedFS, which implements expiration but not transitions
  doctorq.backup.s3_lifecycle:
    s3:
      bucket: doctorq-backups
      endpoint_url: http://seaweedfs.internal:8333
      access_key: "{{ vault_s3_access_key }}"
      secret_key: "{{ vault_s3_secret_key }}"
    preset: seed
    on_unsupported: warn

- name: Create a locked, versioned, encrypted bucket and declare its whole lifecycle
  doctorq.backup.s3_lifecycle:
    s3:
      bucket: doctorq-backups
      region: eu-west-1
    ensure_bucket:
      versioning: true
      encryption: AES256
      object_lock: true
      default_retention:
        mode: GOVERNANCE
        days: 30
    rules:
      - id: backups
        filter:
          prefix: postgresql/
        transitions:
          - days: 30
            storage_class: standard_ia
          - days: 90
            storage_class: glacier
        expiration_days: 400
      - id: old-versions
        noncurrent_expiration_days: 30
        noncurrent_newer_versions: 2
      - id: uploads
        abort_incomplete_multipart_days: 3

- name: Add one rule and keep every other rule of a shared bucket
  doctorq.backup.s3_lifecycle:
    s3:
      bucket: shared-bucket
    purge: false
    rules:
      - id: tmp-cleanup
        filter:
          prefix: tmp/
          tags:
            disposable: "yes"
        expiration_days: 2

- name: Remove the whole lifecycle configuration of a bucket
  doctorq.backup.s3_lifecycle:
    s3:
      bucket: doctorq-backups
    rules: []
"""

RETURN = r"""
rules:
  description:
    - The bucket's rules after the run (in check mode, as they would be), in the canonical form of O(rules)
      (defaults left out, sorted by id, storage classes upper case).
    - Rules the server holds with parts this module does not model show them under C(unmodelled), in the S3 API's
      spelling; an expiration by date shows as C(expiration_date).
  returned: always
  type: list
  elements: dict
  sample:
    - id: doctorq-postgresql-daily-data
      status: enabled
      filter:
        prefix: postgresql/
        tags:
          doctorq-backup-kind: daily
          doctorq-backup-part: data
      transitions:
        - days: 7
          storage_class: GLACIER
      expiration_days: 30
changes:
  description: Ids of the rules added, removed and modified by the run (or that would be, in check mode).
  returned: always
  type: dict
  contains:
    added:
      description: Rule ids that were not on the bucket.
      type: list
      elements: str
      returned: always
    removed:
      description: Rule ids removed from the bucket.
      type: list
      elements: str
      returned: always
    modified:
      description: Rule ids whose content changed.
      type: list
      elements: str
      returned: always
  sample:
    added: [doctorq-postgresql-daily-data]
    removed: []
    modified: []
unsupported:
  description:
    - With O(on_unsupported=warn), what the server refused and was left out. C(left_out) is C(transitions),
      C(noncurrent_transitions), or C(rule) for a rule dropped because no action it has is supported.
  returned: always
  type: list
  elements: dict
  sample:
    - rule: doctorq-postgresql-weekly-data
      left_out: transitions
      detail: GLACIER after 7 days, DEEP_ARCHIVE after 30 days
cost_warnings:
  description:
    - Valid but costly parts of the declaration, as applied (also emitted as warnings). A transition left out
      under O(on_unsupported=warn) costs nothing and is not warned about.
  returned: always
  type: list
  elements: str
  sample:
    - "rule 'doctorq-postgresql-daily-data': objects stay 23 days in GLACIER (day 7 to 30, then expired), but GLACIER
      bills at least 90 days: each object is charged 67 days more than it is stored."
bucket:
  description: With O(ensure_bucket), the declared bucket settings after the run and what was done.
  returned: when O(ensure_bucket) is set
  type: dict
  contains:
    created:
      description: Whether the bucket was created (or would be, in check mode).
      type: bool
      returned: always
    actions:
      description: Settings changed, in order (C(create), C(versioning), C(object_lock), C(default_retention), C(encryption)).
      type: list
      elements: str
      returned: always
    state:
      description: The declared settings as the server reports them after the run (C(exists) and each declared setting).
      type: dict
      returned: always
  sample:
    created: false
    actions: [versioning]
    state: {exists: true, versioning: true, encryption: AES256, object_lock: false}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle
from ansible_collections.doctorq.backup.plugins.module_utils import lifecycle_bucket
from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import require_libs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_argument_spec, s3_client


def argument_spec() -> dict:
    step = dict(days=dict(type="int", required=True), storage_class=dict(type="str", required=True))
    return dict(
        s3=s3_argument_spec(),
        rules=dict(type="list", elements="dict", default=[], options=dict(
            id=dict(type="str", required=True),
            status=dict(type="str", default="enabled", choices=["enabled", "disabled"]),
            filter=dict(type="dict", options=dict(
                prefix=dict(type="str"),
                tags=dict(type="dict"),
                object_size_greater_than=dict(type="int"),
                object_size_less_than=dict(type="int"),
            )),
            transitions=dict(type="list", elements="dict", options=dict(step)),
            expiration_days=dict(type="int"),
            expired_object_delete_marker=dict(type="bool", default=False),
            noncurrent_transitions=dict(type="list", elements="dict",
                                        options=dict(step, newer_versions=dict(type="int"))),
            noncurrent_expiration_days=dict(type="int"),
            noncurrent_newer_versions=dict(type="int"),
            abort_incomplete_multipart_days=dict(type="int"),
        )),
        preset=dict(type="str", choices=list(lifecycle.PRESETS)),
        purge=dict(type="bool", default=True),
        on_unsupported=dict(type="str", default="fail", choices=["fail", "warn"]),
        ensure_bucket=dict(type="dict", options=dict(
            versioning=dict(type="bool"),
            encryption=dict(type="str", choices=["AES256", "aws:kms"]),
            object_lock=dict(type="bool"),
            default_retention=dict(type="dict", options=dict(
                mode=dict(type="str", required=True, choices=["GOVERNANCE", "COMPLIANCE"]),
                days=dict(type="int"),
                years=dict(type="int"),
            ), mutually_exclusive=[["days", "years"]], required_one_of=[["days", "years"]]),
        )),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    if params["s3"] is None:
        # the shared doc fragment cannot mark s3 required (it is optional elsewhere)
        module.fail_json(msg="missing required argument: s3 (at least s3.bucket, the bucket whose lifecycle to manage)")
    require_libs(module, postgres=False, s3=True)
    result: dict = dict(changed=False, rules=[], changes=dict(added=[], removed=[], modified=[]),
                        unsupported=[], cost_warnings=[])
    try:
        cfg = S3Config.from_params(params["s3"])
        declared = lifecycle.declared_rules(params["rules"], params["preset"], cfg)
        spec = lifecycle_bucket.BucketSpec.from_params(params["ensure_bucket"], cfg.kms_key_id)
        client = s3_client(cfg)
        bucket_exists = True
        before: dict = {}
        after: dict = {}
        if spec is not None:
            bucket = lifecycle_bucket.ensure_bucket(client, cfg, spec, check_mode=module.check_mode)
            bucket_exists = bucket.after["exists"] and not (module.check_mode and bucket.created)
            result["bucket"] = dict(created=bucket.created, actions=bucket.actions, state=bucket.after)
            result["changed"] = bucket.changed
            before["bucket"], after["bucket"] = bucket.before, bucket.after
        outcome = lifecycle.ensure_lifecycle(
            client, cfg, declared, purge=params["purge"], on_unsupported=params["on_unsupported"],
            check_mode=module.check_mode, bucket_exists=bucket_exists,
        )
    except StorageError as exc:
        msg = str(exc)
        if exc.code == "NoSuchBucket" and params["ensure_bucket"] is None:
            msg += " Set ensure_bucket to have this module create it."
        module.fail_json(msg=msg, **result)
    except DoctorqError as exc:
        module.fail_json(msg=str(exc), **result)

    before["rules"], after["rules"] = outcome.before, outcome.after
    for warning in outcome.warnings:
        module.warn(warning)
    result.update(
        changed=result["changed"] or outcome.changed,
        rules=outcome.after,
        changes=outcome.changes,
        unsupported=outcome.unsupported,
        cost_warnings=outcome.cost_warnings,
    )
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = dict(before=before, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
