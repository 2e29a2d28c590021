# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bucket's lifecycle as one declared state: plan, write only a difference, prove it.

S3 keeps one lifecycle document per bucket and every PUT replaces all of it,
so a tool that manages "one rule per task" must re-read and re-write the
whole document behind the other tasks' backs, and ends up duplicating rules.
Here the declaration (the rules, plus a preset such as the seed's schedule)
and what the server holds are both reduced to the canonical form of
``lifecycle_rules`` and compared; the document is written only when they
differ, then read back to prove the server kept what was sent (the previous
document is put back when it did not). A server that does not implement part
of the document fails the run naming that part or, with ``on_unsupported:
warn``, gets the largest part it accepts.

The preset and the plan are pure; the thin S3 calls go through
``s3.s3_errors``: every failure is a ``StorageError`` carrying the S3 error code.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from typing import Any, Callable, Iterable, Mapping

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.lifecycle_rules import (
    DEGRADABLE, cost_warnings, has_action, normalise_declared, normalise_s3, same_rules, sort_rules, to_s3, validate,
)
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_errors
from ansible_collections.doctorq.backup.plugins.module_utils.storage import KIND_TAG, PART_TAG

# S3 error codes meaning "this server does not implement that part".
UNSUPPORTED_CODES = frozenset({"NotImplemented", "XNotImplemented", "501"})

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
        if has_action(trimmed):
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
