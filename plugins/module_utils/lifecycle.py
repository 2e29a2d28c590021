# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bucket's lifecycle as one declared state: normalise, validate, compare, write only a difference.

S3 keeps one lifecycle document per bucket and every PUT replaces all of it,
so a tool that manages "one rule per task" must re-read and re-write the
whole document behind the other tasks' backs, and ends up duplicating rules.
Here the declaration and what the server holds are both reduced to one
canonical form (the module's own option names, defaults left out, rules
sorted by id, transitions by day, storage classes upper case, an empty filter
and ``prefix: ""`` the same thing) and compared; the document is written only
when they differ, then read back to prove the server kept what was sent.

The pure part (``normalise_*``, ``validate``, ``cost_warnings``, ``make_plan``,
``seed_preset``, ``strip_features``) takes and returns plain dicts and imports
nothing from Ansible, so it is unit-tested without a server and reusable by
the host CLI. The thin S3 calls go through ``s3.s3_errors``: every failure
is a ``StorageError`` carrying the S3 error code.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import re
import time
from typing import Any, Callable, Iterable, Mapping

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_errors
from ansible_collections.doctorq.backup.plugins.module_utils.storage import KIND_TAG, PART_TAG

# The order S3 lets objects move in (the "waterfall"): a rule may only send
# objects to a class further down this list as days increase.
TRANSITION_CLASSES = ("STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
_RANK = {name: rank for rank, name in enumerate(TRANSITION_CLASSES)}
# S3 refuses to move objects into these before day 30, and out of them
# (to another class) less than 30 days after they arrived.
IA_CLASSES = ("STANDARD_IA", "ONEZONE_IA")
IA_MIN_DAYS = 30
# Minimum storage duration billed per class: leaving earlier still costs this many days.
MIN_BILLED_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30, "GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}
MAX_RULES = 1000
MAX_ID_LENGTH = 255
MAX_NEWER_VERSIONS = 100

# S3 error codes meaning "this server does not implement that part".
UNSUPPORTED_CODES = frozenset({"NotImplemented", "XNotImplemented", "501"})

# Canonical rule keys, in display order. ``id`` and ``status`` are always
# present; everything else only when it is not the default.
RULE_KEYS = (
    "id", "status", "filter", "transitions", "expiration_days", "expiration_date",
    "expired_object_delete_marker", "noncurrent_transitions", "noncurrent_expiration_days",
    "noncurrent_newer_versions", "abort_incomplete_multipart_days", "unmodelled",
)
ACTION_KEYS = (
    "transitions", "expiration_days", "expiration_date", "expired_object_delete_marker",
    "noncurrent_transitions", "noncurrent_expiration_days", "abort_incomplete_multipart_days",
)

# What ``on_unsupported: warn`` may leave out, in the order it tries. Only
# actions whose absence keeps data longer (never a wider filter, never a
# shorter retention) are on this list: degrading must not delete anything
# the declaration would have kept.
DEGRADABLE = (
    ("transitions", "storage class transitions"),
    ("noncurrent_transitions", "noncurrent version transitions"),
)

# The seed's schedule (README_BACKUP.md "Classe de Armazenamento S3 Glacier"
# and "Estratégia de Backup"): Standard for the last 7 days, Glacier from
# day 8 to 30, Deep Archive after day 30; dailies kept 30 days, weeklies 365.
SEED_GLACIER_AFTER_DAYS = 7
SEED_DEEP_ARCHIVE_AFTER_DAYS = 30
SEED_DAILY_EXPIRATION_DAYS = 30
SEED_WEEKLY_EXPIRATION_DAYS = 365
# Not in the seed: parts of a multipart upload that a killed backup never
# completed are invisible in listings but billed until aborted.
SEED_ABORT_MULTIPART_DAYS = 7
PRESETS = ("seed",)


# --------------------------------------------------------------------------
# canonical form


def _prune(rule: dict[str, Any]) -> dict[str, Any]:
    """Drop defaults so that equal meaning gives equal dicts (0 is a value, not a default)."""
    out: dict[str, Any] = {}
    for key in RULE_KEYS:
        value = rule.get(key)
        if key in ("id", "status"):
            out[key] = value
        elif value is None or value is False or value == "" or value == [] or value == {}:
            continue
        else:
            out[key] = value
    return out


def _int_or_none(value: Any) -> Any:
    """Ints stay ints; anything else is kept as is for validate() to name."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _filter(prefix: Any, tags: Mapping[str, Any] | None, greater: Any, less: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if prefix:
        out["prefix"] = str(prefix)
    if tags:
        out["tags"] = {str(k): "" if v is None else str(v) for k, v in sorted(tags.items(), key=lambda kv: str(kv[0]))}
    if greater is not None:
        out["object_size_greater_than"] = _int_or_none(greater)
    if less is not None:
        out["object_size_less_than"] = _int_or_none(less)
    return out


def _transition_key(item: Mapping[str, Any]) -> tuple:
    days = item.get("days")
    return (0 if isinstance(days, int) else 1, days if isinstance(days, int) else str(item.get("date") or ""),
            _RANK.get(str(item.get("storage_class")), 99))


def _class(value: Any) -> str:
    return str(value or "").strip().upper()


def normalise_declared(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as the module options (or the preset) give it, in canonical form.

    Unset suboptions arrive as None from Ansible; they mean "the default".
    Nothing is validated here, so validate() can name every problem at once.
    """
    flt = rule.get("filter") or {}
    transitions = [
        {"days": _int_or_none(t.get("days")), "storage_class": _class(t.get("storage_class"))}
        for t in rule.get("transitions") or []
    ]
    noncurrent = []
    for t in rule.get("noncurrent_transitions") or []:
        item = {"days": _int_or_none(t.get("days")), "storage_class": _class(t.get("storage_class"))}
        if t.get("newer_versions") is not None:
            item["newer_versions"] = _int_or_none(t.get("newer_versions"))
        noncurrent.append(item)
    return _prune({
        "id": "" if rule.get("id") is None else str(rule.get("id")),
        "status": str(rule.get("status") or "enabled").strip().lower(),
        "filter": _filter(flt.get("prefix"), flt.get("tags"), flt.get("object_size_greater_than"),
                          flt.get("object_size_less_than")),
        "transitions": sorted(transitions, key=_transition_key),
        "expiration_days": _int_or_none(rule.get("expiration_days")),
        "expired_object_delete_marker": bool(rule.get("expired_object_delete_marker")),
        "noncurrent_transitions": sorted(noncurrent, key=_transition_key),
        "noncurrent_expiration_days": _int_or_none(rule.get("noncurrent_expiration_days")),
        "noncurrent_newer_versions": _int_or_none(rule.get("noncurrent_newer_versions")),
        "abort_incomplete_multipart_days": _int_or_none(rule.get("abort_incomplete_multipart_days")),
    })


def _date(value: Any) -> str:
    """S3 lifecycle dates are midnight UTC: a day is all there is to compare."""
    if isinstance(value, datetime.datetime):
        return value.date().isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)[:10]


_KNOWN_S3_KEYS = frozenset({
    "ID", "Status", "Filter", "Prefix", "Transitions", "Expiration", "NoncurrentVersionTransitions",
    "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload",
})


def normalise_s3(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as GetBucketLifecycleConfiguration returns it, in canonical form.

    Servers spell the same filter several ways (legacy top-level ``Prefix``,
    ``Filter: {}``, ``Filter: {Prefix: ""}``, ``And`` with one member): all
    become the same dict. Parts this module does not model are kept under
    ``unmodelled`` so they still count in comparisons and show in diffs.
    """
    flt = raw.get("Filter") or {}
    prefix = raw.get("Prefix")
    tags: dict[str, Any] = {}
    greater = less = None
    if "And" in flt:
        both = flt.get("And") or {}
        prefix = both.get("Prefix", prefix)
        tags.update({t.get("Key"): t.get("Value", "") for t in both.get("Tags") or []})
        greater = both.get("ObjectSizeGreaterThan")
        less = both.get("ObjectSizeLessThan")
    if "Prefix" in flt:
        prefix = flt.get("Prefix")
    if flt.get("Tag"):
        tags[flt["Tag"].get("Key")] = flt["Tag"].get("Value", "")
    if flt.get("ObjectSizeGreaterThan") is not None:
        greater = flt["ObjectSizeGreaterThan"]
    if flt.get("ObjectSizeLessThan") is not None:
        less = flt["ObjectSizeLessThan"]

    transitions = []
    for item in raw.get("Transitions") or []:
        entry: dict[str, Any] = {"days": item["Days"]} if item.get("Days") is not None else {"date": _date(item.get("Date"))}
        entry["storage_class"] = _class(item.get("StorageClass"))
        transitions.append(entry)
    noncurrent = []
    for item in raw.get("NoncurrentVersionTransitions") or []:
        entry = {"days": item.get("NoncurrentDays"), "storage_class": _class(item.get("StorageClass"))}
        if item.get("NewerNoncurrentVersions") is not None:
            entry["newer_versions"] = item["NewerNoncurrentVersions"]
        noncurrent.append(entry)
    expiration = raw.get("Expiration") or {}
    nve = raw.get("NoncurrentVersionExpiration") or {}
    unmodelled = {k: v for k, v in raw.items() if k not in _KNOWN_S3_KEYS}
    return _prune({
        "id": raw.get("ID") or "",
        "status": str(raw.get("Status") or "Enabled").lower(),
        "filter": _filter(prefix, tags, greater, less),
        "transitions": sorted(transitions, key=_transition_key),
        "expiration_days": expiration.get("Days"),
        "expiration_date": _date(expiration["Date"]) if expiration.get("Date") else None,
        "expired_object_delete_marker": bool(expiration.get("ExpiredObjectDeleteMarker")),
        "noncurrent_transitions": sorted(noncurrent, key=_transition_key),
        "noncurrent_expiration_days": nve.get("NoncurrentDays"),
        "noncurrent_newer_versions": nve.get("NewerNoncurrentVersions"),
        "abort_incomplete_multipart_days": (raw.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation"),
        "unmodelled": unmodelled,
    })


def _s3_filter(flt: Mapping[str, Any]) -> dict[str, Any]:
    """The narrowest Filter spelling: one member alone, several under ``And``."""
    prefix = flt.get("prefix") or ""
    tags = flt.get("tags") or {}
    greater = flt.get("object_size_greater_than")
    less = flt.get("object_size_less_than")
    members = bool(prefix) + len(tags) + (greater is not None) + (less is not None)
    if members == 0:
        return {"Prefix": ""}
    if members == 1:
        if prefix:
            return {"Prefix": prefix}
        if tags:
            key, value = next(iter(tags.items()))
            return {"Tag": {"Key": key, "Value": value}}
        return {"ObjectSizeGreaterThan": greater} if greater is not None else {"ObjectSizeLessThan": less}
    both: dict[str, Any] = {}
    if prefix:
        both["Prefix"] = prefix
    if tags:
        both["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    if greater is not None:
        both["ObjectSizeGreaterThan"] = greater
    if less is not None:
        both["ObjectSizeLessThan"] = less
    return {"And": both}


def to_s3(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical rule as PutBucketLifecycleConfiguration wants it (inverse of normalise_s3)."""
    raw: dict[str, Any] = {
        "ID": rule["id"],
        "Status": "Enabled" if rule.get("status", "enabled") == "enabled" else "Disabled",
        "Filter": _s3_filter(rule.get("filter") or {}),
    }
    if rule.get("transitions"):
        raw["Transitions"] = [
            {**({"Days": t["days"]} if "days" in t else {"Date": t["date"]}), "StorageClass": t["storage_class"]}
            for t in rule["transitions"]
        ]
    expiration: dict[str, Any] = {}
    if rule.get("expiration_days") is not None:
        expiration["Days"] = rule["expiration_days"]
    if rule.get("expiration_date"):
        expiration["Date"] = rule["expiration_date"]
    if rule.get("expired_object_delete_marker"):
        expiration["ExpiredObjectDeleteMarker"] = True
    if expiration:
        raw["Expiration"] = expiration
    if rule.get("noncurrent_transitions"):
        raw["NoncurrentVersionTransitions"] = [
            {"NoncurrentDays": t["days"], "StorageClass": t["storage_class"],
             **({"NewerNoncurrentVersions": t["newer_versions"]} if t.get("newer_versions") is not None else {})}
            for t in rule["noncurrent_transitions"]
        ]
    if rule.get("noncurrent_expiration_days") is not None:
        raw["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["noncurrent_expiration_days"]}
        if rule.get("noncurrent_newer_versions") is not None:
            raw["NoncurrentVersionExpiration"]["NewerNoncurrentVersions"] = rule["noncurrent_newer_versions"]
    if rule.get("abort_incomplete_multipart_days") is not None:
        raw["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": rule["abort_incomplete_multipart_days"]}
    raw.update(rule.get("unmodelled") or {})
    return raw


def sort_rules(rules: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rule order means nothing to S3; sort by id (then content) so comparison ignores it."""
    return sorted((dict(r) for r in rules), key=lambda r: (r.get("id", ""), json.dumps(r, sort_keys=True, default=str)))


def same_rules(left: Iterable[Mapping[str, Any]], right: Iterable[Mapping[str, Any]]) -> bool:
    return sort_rules(left) == sort_rules(right)


# --------------------------------------------------------------------------
# validation and cost traps


def _has_action(rule: Mapping[str, Any]) -> bool:
    """Any action set at all (0 days counts: it is wrong, and validate() says so, but it is there)."""
    return any(rule.get(key) is not None and rule.get(key) is not False and rule.get(key) != []
               for key in ACTION_KEYS)


def _is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_steps(rid: str, steps: list[dict[str, Any]], label: str, day_word: str, end: Any, end_label: str,
                 min_days: int) -> list[str]:
    """Shared checks of current and noncurrent transitions (same S3 constraints, different clock)."""
    errors: list[str] = []
    valid = []
    for step in steps:
        cls, days = step.get("storage_class"), step.get("days")
        if cls not in _RANK:
            errors.append(f"rule '{rid}': {label} storage_class '{cls}' is not one S3 can move objects to; "
                          f"use one of {', '.join(TRANSITION_CLASSES)}.")
            continue
        if not _is_count(days, min_days):
            errors.append(f"rule '{rid}': {label} to {cls} needs days as a whole number >= {min_days}, got {days!r}.")
            continue
        if cls in IA_CLASSES and days < IA_MIN_DAYS:
            errors.append(f"rule '{rid}': {label} to {cls} after {days} {day_word}: S3 refuses {cls} before "
                          f"day {IA_MIN_DAYS}; set days to {IA_MIN_DAYS} or more, or use GLACIER_IR/GLACIER.")
        if "newer_versions" in step and not (_is_count(step["newer_versions"], 1)
                                             and step["newer_versions"] <= MAX_NEWER_VERSIONS):
            errors.append(f"rule '{rid}': {label} to {cls}: newer_versions must be 1 to {MAX_NEWER_VERSIONS}.")
        valid.append(step)
    for before, after in zip(valid, valid[1:]):
        if after["days"] == before["days"]:
            errors.append(f"rule '{rid}': two {label}s on day {after['days']} ({before['storage_class']} and "
                          f"{after['storage_class']}); give each transition its own day, in increasing order.")
        elif _RANK[after["storage_class"]] <= _RANK[before["storage_class"]]:
            errors.append(f"rule '{rid}': {label} to {after['storage_class']} on day {after['days']} comes after "
                          f"{before['storage_class']} on day {before['days']}; S3 only moves objects to colder "
                          f"classes as days increase ({' -> '.join(TRANSITION_CLASSES)}): reorder the days.")
        elif before["storage_class"] in IA_CLASSES and after["days"] - before["days"] < IA_MIN_DAYS:
            errors.append(f"rule '{rid}': {label} to {after['storage_class']} on day {after['days']} is only "
                          f"{after['days'] - before['days']} days after {before['storage_class']}; S3 keeps objects "
                          f"in {before['storage_class']} at least {IA_MIN_DAYS} days: move it to day "
                          f"{before['days'] + IA_MIN_DAYS} or later.")
    if valid and _is_count(end, 1) and end <= valid[-1]["days"]:
        last = valid[-1]
        errors.append(f"rule '{rid}': {end_label} on day {end} is not after the last {label} "
                      f"({last['storage_class']} on day {last['days']}); expire after day {last['days']}, "
                      "or drop the transitions that would never happen.")
    return errors


def validate(rules: list[Mapping[str, Any]]) -> list[str]:
    """Every problem S3 would refuse (or that makes no sense), with what to change, before any request."""
    errors: list[str] = []
    if len(rules) > MAX_RULES:
        errors.append(f"{len(rules)} rules declared; S3 allows at most {MAX_RULES} per bucket: merge rules that "
                      "share a filter.")
    seen: set[str] = set()
    for rule in rules:
        rid = rule.get("id", "")
        if not rid:
            errors.append("a rule has an empty id; give every rule a unique id (it is how rules are matched).")
        elif len(rid) > MAX_ID_LENGTH:
            errors.append(f"rule id '{rid[:40]}...' is {len(rid)} characters; S3 allows {MAX_ID_LENGTH}.")
        elif rid in seen:
            errors.append(f"rule id '{rid}' is declared twice (in rules, or in rules and by the preset); give each "
                          "rule its own id.")
        seen.add(rid)
        if rule.get("status") not in ("enabled", "disabled"):
            errors.append(f"rule '{rid}': status must be enabled or disabled, got {rule.get('status')!r}.")
        if not _has_action(rule):
            errors.append(f"rule '{rid}' has no action; set transitions, expiration_days, "
                          "expired_object_delete_marker, noncurrent_transitions, noncurrent_expiration_days or "
                          "abort_incomplete_multipart_days.")

        flt = rule.get("filter") or {}
        sized = "object_size_greater_than" in flt or "object_size_less_than" in flt
        narrow_by = [name for name, present in (("tags", bool(flt.get("tags"))), ("object size", sized)) if present]
        for key in ("object_size_greater_than", "object_size_less_than"):
            if key in flt and not _is_count(flt[key], 0):
                errors.append(f"rule '{rid}': filter.{key} must be a whole number of bytes >= 0, got {flt[key]!r}.")
        greater, less = flt.get("object_size_greater_than"), flt.get("object_size_less_than")
        if _is_count(greater, 0) and _is_count(less, 0) and greater >= less:
            errors.append(f"rule '{rid}': filter.object_size_greater_than ({greater}) must be smaller than "
                          f"object_size_less_than ({less}), or no object matches.")
        for key, value in (flt.get("tags") or {}).items():
            if not key or len(key) > 128 or len(value) > 256:
                errors.append(f"rule '{rid}': filter tag '{key[:40]}' needs a key of 1-128 and a value of at most "
                              "256 characters.")

        errors += _check_steps(rid, list(rule.get("transitions") or []), "transition", "days",
                               rule.get("expiration_days"), "expiration_days", 0)
        exp = rule.get("expiration_days")
        if exp is not None and not _is_count(exp, 1):
            errors.append(f"rule '{rid}': expiration_days must be a whole number >= 1, got {exp!r}.")
        if rule.get("expired_object_delete_marker"):
            if exp is not None:
                errors.append(f"rule '{rid}': expired_object_delete_marker cannot be combined with expiration_days "
                              "in one rule (S3 refuses it); put them in two rules.")
            if narrow_by:
                errors.append(f"rule '{rid}': expired_object_delete_marker cannot be used with a "
                              f"{' or '.join(narrow_by)} filter (S3 refuses it); filter by prefix only.")

        errors += _check_steps(rid, list(rule.get("noncurrent_transitions") or []), "noncurrent transition",
                               "noncurrent days", rule.get("noncurrent_expiration_days"),
                               "noncurrent_expiration_days", 0)
        nexp = rule.get("noncurrent_expiration_days")
        if nexp is not None and not _is_count(nexp, 1):
            errors.append(f"rule '{rid}': noncurrent_expiration_days must be a whole number >= 1, got {nexp!r}.")
        newer = rule.get("noncurrent_newer_versions")
        if newer is not None:
            if nexp is None:
                errors.append(f"rule '{rid}': noncurrent_newer_versions only applies with "
                              "noncurrent_expiration_days; set both.")
            if not (_is_count(newer, 1) and newer <= MAX_NEWER_VERSIONS):
                errors.append(f"rule '{rid}': noncurrent_newer_versions must be 1 to {MAX_NEWER_VERSIONS}, "
                              f"got {newer!r}.")

        abort = rule.get("abort_incomplete_multipart_days")
        if abort is not None:
            if not _is_count(abort, 1):
                errors.append(f"rule '{rid}': abort_incomplete_multipart_days must be a whole number >= 1, "
                              f"got {abort!r}.")
            if narrow_by:
                errors.append(f"rule '{rid}': abort_incomplete_multipart_days cannot be used with a "
                              f"{' or '.join(narrow_by)} filter (uploads in progress have neither); "
                              "put it in its own rule filtered by prefix only.")
    return errors


def _stay_warnings(rid: str, steps: list[Mapping[str, Any]], end: Any, label: str) -> list[str]:
    warnings = []
    for index, step in enumerate(steps):
        cls, start = step.get("storage_class"), step.get("days")
        minimum = MIN_BILLED_DAYS.get(cls)
        if minimum is None or not isinstance(start, int):
            continue
        if index + 1 < len(steps):
            leave, how = steps[index + 1].get("days"), f"moved on to {steps[index + 1].get('storage_class')}"
        else:
            leave, how = end, "expired"
        if isinstance(leave, int) and leave - start < minimum:
            warnings.append(
                f"rule '{rid}': {label}objects stay {leave - start} days in {cls} (day {start} to {leave}, then "
                f"{how}), but {cls} bills at least {minimum} days: each object is charged "
                f"{minimum - (leave - start)} days more than it is stored.")
    return warnings


def cost_warnings(rules: list[Mapping[str, Any]]) -> list[str]:
    """Valid but costly: leaving a class before its minimum billed duration (an early-deletion charge)."""
    warnings: list[str] = []
    for rule in rules:
        rid = rule.get("id", "")
        warnings += _stay_warnings(rid, list(rule.get("transitions") or []), rule.get("expiration_days"), "")
        warnings += _stay_warnings(rid, list(rule.get("noncurrent_transitions") or []),
                                   rule.get("noncurrent_expiration_days"), "noncurrent ")
    return warnings


# --------------------------------------------------------------------------
# the seed's policy


def _id_part(text: str) -> str:
    """Rule ids limited to characters every S3-compatible server accepts."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def seed_preset(cfg: S3Config) -> list[dict[str, Any]]:
    """The seed's schedule for the keys pg_backup writes under ``s3.prefix``.

    Dailies live at ``<prefix>/<db>/<date>/`` and weeklies at
    ``<prefix>/weekly/<db>/<date>/``, but every rule filters on ``<prefix>/``
    and the tags every object carries: the kind (daily/weekly) and the part
    (data moves to archive tiers; checksum files and manifests stay in
    STANDARD, readable, and expire with their data). The tags alone tell the
    kinds apart, so the same rules given a parent prefix (``doctorq``) cover
    every host's prefix below it (``doctorq/db1``, ``doctorq/db2``), their
    weekly folders and their file sets (``doctorq/db1/files``): a fleet
    sharing a bucket needs five rules, not five per host. Ids carry the
    prefix so unrelated prefixes can share a bucket (with ``purge: false``).
    """
    base = cfg.key()
    prefix = f"{base}/" if base else ""
    stem = "doctorq-" + (f"{_id_part(base)}-" if _id_part(base) else "")
    glacier = {"days": SEED_GLACIER_AFTER_DAYS, "storage_class": "GLACIER"}
    deep = {"days": SEED_DEEP_ARCHIVE_AFTER_DAYS, "storage_class": "DEEP_ARCHIVE"}
    schedule = (
        ("daily", [glacier], SEED_DAILY_EXPIRATION_DAYS),
        ("weekly", [glacier, deep], SEED_WEEKLY_EXPIRATION_DAYS),
    )
    rules: list[dict[str, Any]] = []
    for kind, transitions, expiration in schedule:
        for part in ("data", "meta"):
            rules.append({
                "id": f"{stem}{kind}-{part}",
                "filter": {"prefix": prefix, "tags": {KIND_TAG: kind, PART_TAG: part}},
                "transitions": transitions if part == "data" else [],
                "expiration_days": expiration,
            })
    rules.append({"id": stem + "abort-multipart", "filter": {"prefix": prefix},
                  "abort_incomplete_multipart_days": SEED_ABORT_MULTIPART_DAYS})
    return [normalise_declared(rule) for rule in rules]


def declared_rules(rules: list[Mapping[str, Any]] | None, preset: str | None, cfg: S3Config) -> list[dict[str, Any]]:
    """The preset's rules plus the declared ones, canonical; ConfigError naming every problem."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}.")
    out = seed_preset(cfg) if preset == "seed" else []
    out += [normalise_declared(rule) for rule in rules or []]
    errors = validate(out)
    if errors:
        raise ConfigError("invalid lifecycle rules, nothing was changed: " + " ".join(errors))
    return sort_rules(out)


# --------------------------------------------------------------------------
# planning


@dataclasses.dataclass
class Plan:
    """Current and wanted rule sets, both canonical and sorted; raw kept to write untouched rules back verbatim."""

    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    raw_before: list[dict[str, Any]]

    @property
    def changed(self) -> bool:
        return not same_rules(self.before, self.after)

    def changes(self) -> dict[str, list[str]]:
        old = {r["id"]: r for r in self.before}
        new = {r["id"]: r for r in self.after}
        return {
            "added": sorted(i for i in new if i not in old),
            "removed": sorted(i for i in old if i not in new),
            "modified": sorted(i for i in new if i in old and old[i] != new[i]),
        }

    def s3_rules(self) -> list[dict[str, Any]]:
        """What to PUT: a rule the server already holds as is goes back in the server's own spelling."""
        out = []
        for rule in self.after:
            raw = next((r for c, r in zip(self.before, self.raw_before) if c == rule), None)
            out.append(raw if raw is not None else to_s3(rule))
        return out


def make_plan(raw_current: list[Mapping[str, Any]], declared: list[dict[str, Any]], purge: bool) -> Plan:
    """purge: the declaration is the whole set; else declared rules replace same-id rules, the rest stay."""
    pairs = sorted(((normalise_s3(r), dict(r)) for r in raw_current),
                   key=lambda p: (p[0].get("id", ""), json.dumps(p[0], sort_keys=True, default=str)))
    before = [canonical for canonical, _raw in pairs]
    ids = {r["id"] for r in declared}
    after = list(declared) if purge else [c for c in before if c["id"] not in ids] + list(declared)
    return Plan(before=before, after=sort_rules(after), raw_before=[raw for _canonical, raw in pairs])


def features_used(rules: list[Mapping[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """(feature, label, rule ids) for each degradable feature the rules use."""
    found = []
    for key, label in DEGRADABLE:
        ids = [r["id"] for r in rules if r.get(key)]
        if ids:
            found.append((key, label, ids))
    return found


def _describe_steps(steps: list[Mapping[str, Any]]) -> str:
    return ", ".join(f"{s['storage_class']} after {s.get('days', s.get('date'))} days" for s in steps)


def strip_features(rules: list[dict[str, Any]], features: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Leave the given actions out; a rule left with no action at all is left out whole."""
    features = tuple(features)
    kept, left_out = [], []
    for rule in rules:
        trimmed = dict(rule)
        for feature in features:
            if trimmed.get(feature):
                left_out.append({"rule": rule["id"], "left_out": feature, "detail": _describe_steps(trimmed[feature])})
                del trimmed[feature]
        if _has_action(trimmed):
            kept.append(trimmed)
        else:
            left_out.append({"rule": rule["id"], "left_out": "rule",
                             "detail": "nothing the server supports is left in it"})
    return kept, left_out


# --------------------------------------------------------------------------
# S3 calls


def read_rules(client: Any, bucket: str, where: str) -> list[dict[str, Any]]:
    """The bucket's rules as the server spells them; [] when it has no lifecycle configuration."""
    with s3_errors("GetBucketLifecycleConfiguration", where, expected=("NoSuchLifecycleConfiguration",)):
        return list(client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules") or [])
    return []


def write_rules(client: Any, bucket: str, rules: list[dict[str, Any]], where: str) -> None:
    """PUT replaces the whole document; S3 refuses an empty one, so no rules means DELETE."""
    if rules:
        with s3_errors("PutBucketLifecycleConfiguration", where):
            client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    else:
        with s3_errors("DeleteBucketLifecycle", where):
            client.delete_bucket_lifecycle(Bucket=bucket)


@dataclasses.dataclass
class LifecycleOutcome:
    """What ensure_lifecycle did (or, in check mode, would do)."""

    changed: bool
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    changes: dict[str, list[str]]
    unsupported: list[dict[str, str]] = dataclasses.field(default_factory=list)
    cost_warnings: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return self.cost_warnings + self.notes


def _mismatch(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> str:
    want = {r["id"]: r for r in expected}
    have = {r["id"]: r for r in got}
    parts = []
    for rid in sorted(set(want) | set(have)):
        if want.get(rid) != have.get(rid):
            parts.append(f"rule '{rid}' sent {json.dumps(want.get(rid), sort_keys=True)} but stored "
                         f"{json.dumps(have.get(rid), sort_keys=True)}")
    return "; ".join(parts)


def _verify(client: Any, bucket: str, where: str, plan: Plan, sleep: Callable[[float], None],
            delays: tuple[float, ...]) -> str | None:
    """Read back what was written: a server that silently drops a filter must not pass for success.

    AWS may answer a GET with the previous document for a few seconds after
    a PUT; that case is polled, then reported as a warning. Anything else is
    a mismatch: the previous document is put back and StorageError raised.
    """
    got: list[dict[str, Any]] = []
    for delay in (0.0, *delays):
        if delay:
            sleep(delay)
        got = [normalise_s3(r) for r in read_rules(client, bucket, where)]
        if same_rules(got, plan.after):
            return None
        if not same_rules(got, plan.before):
            break
    else:
        return (f"{where} still shows the previous lifecycle configuration after the update was accepted "
                "(propagation delay); run again to confirm it took effect.")
    detail = _mismatch(plan.after, got)
    try:
        write_rules(client, bucket, plan.raw_before, where)
        undo = "the previous configuration was put back"
    except StorageError as exc:
        undo = f"putting the previous configuration back failed too ({exc})"
    raise StorageError(
        f"{where} accepted the lifecycle configuration but stored something else ({detail}); {undo}. "
        "This server does not implement part of the declaration faithfully: leave that part out.",
        code="LifecycleMismatch")


def ensure_lifecycle(client: Any, cfg: S3Config, declared: list[dict[str, Any]], *, purge: bool = True,
                     on_unsupported: str = "fail", check_mode: bool = False, bucket_exists: bool = True,
                     sleep: Callable[[float], None] = time.sleep,
                     verify_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> LifecycleOutcome:
    """Read, compare, write only on a difference, prove it; degrade on NotImplemented if told to.

    bucket_exists False (check mode, bucket still to be created): the current
    configuration is empty by definition and nothing is read.
    """
    where = cfg.where
    raw = read_rules(client, cfg.bucket, where) if bucket_exists else []
    plan = make_plan(raw, declared, purge)
    costs = cost_warnings(declared)
    if not plan.changed or check_mode:
        return LifecycleOutcome(plan.changed, plan.before, plan.after, plan.changes(), cost_warnings=costs)
    try:
        write_rules(client, cfg.bucket, plan.s3_rules(), where)
    except StorageError as exc:
        if exc.code not in UNSUPPORTED_CODES:
            raise
        return _degrade(client, cfg, plan, declared, exc, on_unsupported, sleep, verify_delays)
    stale = _verify(client, cfg.bucket, where, plan, sleep, verify_delays)
    return LifecycleOutcome(True, plan.before, plan.after, plan.changes(), cost_warnings=costs,
                            notes=[stale] if stale else [])


def _left_out_note(where: str, item: Mapping[str, str]) -> str:
    if item["left_out"] == "rule":
        return f"rule '{item['rule']}' was left out: {item['detail']} on {where}."
    label = dict(DEGRADABLE).get(item["left_out"], item["left_out"])
    return (f"{where} does not implement {label}: left out of rule '{item['rule']}' ({item['detail']}); "
            "the rest of the rule was applied.")


def _degrade(client: Any, cfg: S3Config, plan: Plan, declared: list[dict[str, Any]], refusal: StorageError,
             on_unsupported: str, sleep: Callable[[float], None], verify_delays: tuple[float, ...]) -> LifecycleOutcome:
    """The server refused part of the document: name it, or apply the largest part it accepts.

    A refused PUT changes nothing, so trying smaller documents is safe; they
    are tried by leaving out as few features as possible (one, then two...).
    """
    where = cfg.where
    used = features_used(plan.after)
    named = "; ".join(f"{label} in rule{'s' if len(ids) > 1 else ''} {', '.join(repr(i) for i in ids)}"
                      for _key, label, ids in used)
    if on_unsupported != "warn" or not used:
        hint = (f" The declaration uses what some S3-compatible servers (SeaweedFS for one) lack: {named}. "
                "Nothing was changed. Set on_unsupported=warn to apply the rest without them, "
                "or leave them out of the declaration.") if used else " Nothing was changed."
        raise StorageError(f"{where} does not implement part of this lifecycle configuration "
                           f"({refusal.code}).{hint}", code=refusal.code)
    keys = [key for key, _label, _ids in used]
    for size in range(1, len(keys) + 1):
        for subset in itertools.combinations(keys, size):
            trimmed, left_out = strip_features(plan.after, subset)
            sub = Plan(before=plan.before, after=sort_rules(trimmed), raw_before=plan.raw_before)
            notes = [_left_out_note(where, item) for item in left_out]
            # cost traps of what is really applied: a transition left out costs nothing
            costs = cost_warnings(strip_features(declared, subset)[0])
            if not sub.changed:
                return LifecycleOutcome(False, sub.before, sub.after, sub.changes(), left_out, costs, notes)
            try:
                write_rules(client, cfg.bucket, sub.s3_rules(), where)
            except StorageError as exc:
                if exc.code in UNSUPPORTED_CODES:
                    continue
                raise
            stale = _verify(client, cfg.bucket, where, sub, sleep, verify_delays)
            return LifecycleOutcome(True, sub.before, sub.after, sub.changes(), left_out, costs,
                                    notes + ([stale] if stale else []))
    raise StorageError(f"{where} does not implement part of this lifecycle configuration ({refusal.code}), even "
                       f"without {named}; nothing was changed. Reduce the declaration to expiration rules "
                       "filtered by prefix, which S3-compatible servers implement most widely.", code=refusal.code)


# --------------------------------------------------------------------------
# the bucket itself (optional)


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
                if value is not None and not _is_count(value, 1):
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
