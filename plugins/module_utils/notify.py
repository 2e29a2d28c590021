# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Telling people and monitoring: webhooks and a Prometheus textfile.

Neither may fail a backup: a webhook outage is a warning in the result and
the log, nothing more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import urllib.error
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic
from ansible_collections.doctorq.backup.plugins.module_utils.runlog import RunLog

# The longest a webhook may take, all in: connecting, sending, and the whole answer.
WEBHOOK_DEADLINE_S = 10.0


def webhook_body(fmt: str, event: dict[str, Any]) -> dict[str, Any]:
    """Slack's ``text`` message, or the event's facts as generic JSON."""
    if fmt == "slack":
        icon = ":white_check_mark:" if event.get("status") == "success" else ":rotating_light:"
        return {"text": f"{icon} {event.get('summary', '')}"}
    return event


def send_webhook(url: str, fmt: str, event: dict[str, Any], timeout: float = WEBHOOK_DEADLINE_S) -> str | None:
    """POST the event; return a warning (never raise) when it does not go through within ``timeout`` seconds.

    ``timeout`` is a total deadline, not a per-read one: a server that
    trickles its answer a byte at a time must not hold a finished backup. The
    request runs in a daemon thread; at the deadline the run goes on without
    it (the thread ends with the connection, or with the process).

    The URL itself is a secret (Slack puts the token in it): it is never part
    of the warning.
    """
    body = json.dumps(webhook_body(fmt, event)).encode("utf-8")
    outcome: list[str | None] = []
    worker = threading.Thread(target=lambda: outcome.append(_post(url, body, timeout)), name="doctorq-webhook",
                              daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return (f"webhook notification failed: the server did not finish answering within {timeout:g} s; "
                "the backup itself is not affected.")
    return outcome[0]


def _post(url: str, body: bytes, timeout: float) -> str | None:
    """One POST; a warning for anything that goes wrong (an exception here would be lost in the thread)."""
    # imported here: ansible's urls (and the TLS stack it loads) cost 0.1 s at every start, and only a run that notifies needs them
    from ansible.module_utils.urls import open_url  # pylint: disable=import-outside-toplevel
    try:
        resp = open_url(url, data=body, method="POST", timeout=timeout, http_agent="doctorq-backup",
                        headers={"Content-Type": "application/json"})
        resp.read(1024)
        resp.close()
        return None
    except urllib.error.HTTPError as exc:
        return f"webhook notification failed: the server answered HTTP {exc.code}; the backup itself is not affected."
    except Exception as exc:  # pylint: disable=broad-except  # URLError, OSError, http.client's, ssl's: all only a warning
        reason = getattr(exc, "reason", exc)
        return f"webhook notification failed: {type(exc).__name__} ({_scrub(str(reason), url)}); the backup itself is not affected."


def _scrub(text: str, url: str) -> str:
    return text.replace(url, "<webhook url>")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _previous_samples(path: str, prefix: str) -> dict[str, float]:
    """The samples an earlier run wrote, so a failed run keeps the time (and facts) of the last success."""
    found: dict[str, float] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = re.match(rf"^{re.escape(prefix)}(\w+)\{{.*\}} (\S+)$", line.strip())
                if match:
                    try:
                        found[match.group(1)] = float(match.group(2))
                    except ValueError:
                        pass
    except OSError:
        pass
    return found


def metrics_path(directory: str, job: str, name: str) -> str:
    """``<directory>/doctorq_<job>_<name>.prom``: the name with every character but ``[A-Za-z0-9_.-]`` as ``_``.

    Two names can read the same that way (``a b`` and ``a_b``): the one that
    finds the plain file holding the other's samples writes its own,
    ``doctorq_<job>_<name>-<8 hex of its SHA-256>.prom``, instead of
    overwriting them.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    plain = os.path.join(directory, f"doctorq_{job}_{safe}.prom")
    if _file_label(plain) in (None, name):
        return plain
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return os.path.join(directory, f"doctorq_{job}_{safe}-{digest}.prom")


def _file_label(path: str) -> str | None:
    """The ``name`` label (``database`` before 0.2) of the samples in a .prom file we wrote; None: none, or no file."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = re.search(r'[{,](?:name|database)="((?:[^"\\]|\\.)*)"', line)
                if match:
                    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), match.group(1))
    except OSError:
        pass
    return None


def write_metrics(directory: str, job: str, name: str, samples: dict[str, float]) -> str:
    """Write ``doctorq_<job>_<metric>{name="...",database="..."}`` samples to a .prom file for node_exporter.

    ``database`` is ``name`` again, the label's name before docs/DESIGN.md's "Words", written until 1.0.0.
    Samples this run does not set (``last_success_*`` after a failure) keep their previous values.
    """
    path = metrics_path(directory, job, name)
    labels = f'{{name="{_label(name)}",database="{_label(name)}"}}'
    merged = {**_previous_samples(path, f"doctorq_{job}_"), **samples}
    lines = []
    for metric, value in sorted(merged.items()):
        metric_name = f"doctorq_{job}_{metric}"
        lines.append(f"# TYPE {metric_name} gauge")
        # repr: full precision (a Unix time needs 10+ digits; "%g" would round it to days)
        lines.append(f"{metric_name}{labels} {float(value)!r}" if not float(value).is_integer()
                     else f"{metric_name}{labels} {int(value)}")
    suffix = "The run's own outcome is not affected."
    where = f"notification.metrics_dir {directory}"
    if not os.path.isdir(directory):
        raise StorageError(f"metrics not written: {where} does not exist or is not a directory; create it "
                           f"(node_exporter's textfile directory) or fix the notification.metrics_dir option. {suffix}")
    try:
        write_file_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"), mode=0o644)
    except StorageError as exc:
        raise StorageError(f"metrics not written to {where}: {exc} It must be writable by uid "
                           f"{os.geteuid()}. {suffix}") from None
    return path


NOTIFY_ON = ("always", "failure", "never")


def notify_argument_spec() -> dict[str, Any]:
    """The ``notification`` option (webhook and metrics) of every job that reports an outcome.

    Doc fragment ``doctorq.backup.notify``; edit them together. ``notify_on``
    has no default here: each job has its own (``Notifier.from_params``).
    """
    return dict(notification=dict(type="dict", options=dict(
        webhook_url=dict(type="str", no_log=True),
        webhook_format=dict(type="str", default="slack", choices=["slack", "json"]),
        notify_on=dict(type="str", choices=list(NOTIFY_ON)),
        metrics_dir=dict(type="path"),
    )))


@dataclasses.dataclass(frozen=True)
class Notifier:
    """Where to report outcomes: webhook and Prometheus textfile."""

    webhook_url: str | None = dataclasses.field(default=None, repr=False)
    webhook_format: str = "slack"
    notify_on: str = "always"
    metrics_dir: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], notify_on: str = "always") -> "Notifier":
        """The ``notification`` option of ``params``; ``notify_on`` is the job's default (drills: ``failure``)."""
        given = params.get("notification") or {}
        return cls(given.get("webhook_url"), given.get("webhook_format") or "slack",
                   given.get("notify_on") or notify_on, given.get("metrics_dir"))

    def send(self, event: dict[str, Any], log: RunLog) -> list[str]:
        if not self.webhook_url or self.notify_on == "never":
            return []
        if self.notify_on == "failure" and event.get("status") == "success":
            return []
        warning = send_webhook(self.webhook_url, self.webhook_format, event)
        if warning:
            log(f"WARNING: {warning}")
            return [warning]
        log("Notification sent")
        return []

    def metrics(self, job: str, name: str, samples: dict[str, float], log: RunLog) -> list[str]:
        if not self.metrics_dir:
            return []
        try:
            write_metrics(self.metrics_dir, job, name, samples)
        except (DoctorqError, OSError) as exc:  # like the webhook: a warning, never the run's failure
            log(f"WARNING: {exc}")
            return [str(exc)]
        return []
