# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Telling people and monitoring: webhooks and a Prometheus textfile.

Neither may fail a backup: a webhook outage is a warning in the result and
the log, nothing more.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
from typing import Any

from ansible.module_utils.urls import open_url

from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic


def webhook_body(fmt: str, event: dict[str, Any]) -> dict[str, Any]:
    """Slack's ``text`` message, or the event's facts as generic JSON."""
    if fmt == "slack":
        icon = ":white_check_mark:" if event.get("status") == "success" else ":rotating_light:"
        return {"text": f"{icon} {event.get('summary', '')}"}
    return event


def send_webhook(url: str, fmt: str, event: dict[str, Any], timeout: float = 10.0) -> str | None:
    """POST the event; return a warning (never raise) when it does not go through.

    The URL itself is a secret (Slack puts the token in it): it is never part
    of the warning.
    """
    body = json.dumps(webhook_body(fmt, event)).encode("utf-8")
    try:
        resp = open_url(url, data=body, method="POST", timeout=timeout, http_agent="doctorq-backup",
                        headers={"Content-Type": "application/json"})
        resp.read(1024)
        resp.close()
        return None
    except urllib.error.HTTPError as exc:
        return f"webhook notification failed: the server answered HTTP {exc.code}; the backup itself is not affected."
    except (urllib.error.URLError, OSError, ValueError) as exc:
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


def write_metrics(directory: str, job: str, database: str, samples: dict[str, float]) -> str:
    """Write ``doctorq_<job>_<metric>{database="..."}`` samples to a .prom file for node_exporter.

    Samples this run does not set (``last_success_*`` after a failure) keep their previous values.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database)
    path = os.path.join(directory, f"doctorq_{job}_{safe}.prom")
    merged = {**_previous_samples(path, f"doctorq_{job}_"), **samples}
    lines = []
    for metric, value in sorted(merged.items()):
        name = f"doctorq_{job}_{metric}"
        lines.append(f"# TYPE {name} gauge")
        # repr: full precision (a Unix time needs 10+ digits; "%g" would round it to days)
        lines.append(f'{name}{{database="{_label(database)}"}} {float(value)!r}' if not float(value).is_integer()
                     else f'{name}{{database="{_label(database)}"}} {int(value)}')
    write_file_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"), mode=0o644)
    return path
