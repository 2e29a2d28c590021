"""One module task through the real ansible-playbook (action plugins, redirects, deprecations), its result as a dict."""

from __future__ import annotations

import json
import os
from typing import Any

import yaml


def run_task(ansible_playbook, work_dir: str, module: str, args: dict[str, Any], check: bool = False,
             defaults: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """(the task's registered result, ansible's whole output on one line per warning).

    ``args`` travel in the 0600 extra-vars file (no secret in argv); ``defaults``
    are module_defaults of the group/doctorq.backup.backup action group.
    """
    os.makedirs(work_dir, exist_ok=True)
    out = os.path.join(work_dir, "result.json")
    book = [{"hosts": "localhost", "gather_facts": False,
             "module_defaults": {"group/doctorq.backup.backup": defaults or {}},
             "tasks": [{"name": "the task", module if "." in module else f"doctorq.backup.{module}": "{{ task_args }}",
                        "register": "outcome", "ignore_errors": True, "check_mode": check},
                       {"ansible.builtin.copy": {"content": "{{ outcome | to_json }}", "dest": out, "mode": "0600"}}]}]
    path = os.path.join(work_dir, "play.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(book, handle, sort_keys=False)
    run = ansible_playbook(path, {"task_args": args})
    assert os.path.exists(out), run.stdout[-4000:] + run.stderr[-2000:]
    with open(out, encoding="utf-8") as handle:
        return json.load(handle), " ".join((run.stdout + run.stderr).split())
