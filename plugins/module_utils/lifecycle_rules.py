# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lifecycle rule model, pure: canonical form, validation, cost traps.

S3 keeps one lifecycle document per bucket and every PUT replaces all of it,
so the declaration and what the server holds are both reduced to one
canonical form (the module's own option names, defaults left out, rules
sorted by id, transitions by day, storage classes upper case, an empty filter
and ``prefix: ""`` the same thing) before they are compared
(``lifecycle.py`` plans and applies the difference).

Everything here takes and returns plain dicts, does no I/O and imports
nothing from Ansible, so it is unit-tested without a server and reusable by
the host CLI.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Iterable, Mapping

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


def has_action(rule: Mapping[str, Any]) -> bool:
    """Any action set at all (0 days counts: it is wrong, and validate() says so, but it is there)."""
    return any(rule.get(key) is not None and rule.get(key) is not False and rule.get(key) != []
               for key in ACTION_KEYS)


def is_count(value: Any, minimum: int) -> bool:
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
        if not is_count(days, min_days):
            errors.append(f"rule '{rid}': {label} to {cls} needs days as a whole number >= {min_days}, got {days!r}.")
            continue
        if cls in IA_CLASSES and days < IA_MIN_DAYS:
            errors.append(f"rule '{rid}': {label} to {cls} after {days} {day_word}: S3 refuses {cls} before "
                          f"day {IA_MIN_DAYS}; set days to {IA_MIN_DAYS} or more, or use GLACIER_IR/GLACIER.")
        if "newer_versions" in step and not (is_count(step["newer_versions"], 1)
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
    if valid and is_count(end, 1) and end <= valid[-1]["days"]:
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
        if not has_action(rule):
            errors.append(f"rule '{rid}' has no action; set transitions, expiration_days, "
                          "expired_object_delete_marker, noncurrent_transitions, noncurrent_expiration_days or "
                          "abort_incomplete_multipart_days.")

        flt = rule.get("filter") or {}
        sized = "object_size_greater_than" in flt or "object_size_less_than" in flt
        narrow_by = [name for name, present in (("tags", bool(flt.get("tags"))), ("object size", sized)) if present]
        for key in ("object_size_greater_than", "object_size_less_than"):
            if key in flt and not is_count(flt[key], 0):
                errors.append(f"rule '{rid}': filter.{key} must be a whole number of bytes >= 0, got {flt[key]!r}.")
        greater, less = flt.get("object_size_greater_than"), flt.get("object_size_less_than")
        if is_count(greater, 0) and is_count(less, 0) and greater >= less:
            errors.append(f"rule '{rid}': filter.object_size_greater_than ({greater}) must be smaller than "
                          f"object_size_less_than ({less}), or no object matches.")
        for key, value in (flt.get("tags") or {}).items():
            if not key or len(key) > 128 or len(value) > 256:
                errors.append(f"rule '{rid}': filter tag '{key[:40]}' needs a key of 1-128 and a value of at most "
                              "256 characters.")

        errors += _check_steps(rid, list(rule.get("transitions") or []), "transition", "days",
                               rule.get("expiration_days"), "expiration_days", 0)
        exp = rule.get("expiration_days")
        if exp is not None and not is_count(exp, 1):
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
        if nexp is not None and not is_count(nexp, 1):
            errors.append(f"rule '{rid}': noncurrent_expiration_days must be a whole number >= 1, got {nexp!r}.")
        newer = rule.get("noncurrent_newer_versions")
        if newer is not None:
            if nexp is None:
                errors.append(f"rule '{rid}': noncurrent_newer_versions only applies with "
                              "noncurrent_expiration_days; set both.")
            if not (is_count(newer, 1) and newer <= MAX_NEWER_VERSIONS):
                errors.append(f"rule '{rid}': noncurrent_newer_versions must be 1 to {MAX_NEWER_VERSIONS}, "
                              f"got {newer!r}.")

        abort = rule.get("abort_incomplete_multipart_days")
        if abort is not None:
            if not is_count(abort, 1):
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
