"""Rendering a role's template the way Ansible does, for tests that check what a role writes.

Rendered in a child process: ansible's controller-side templating changes
process-wide state (how module warnings are reported) that the in-process
module runner of other tests relies on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "roles")

_RENDER = r"""
import json, os, sys
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
role, template_name, extra = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
def trusted(value):
    # the role's variables are templates themselves, as Ansible reads them, nested ones too
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value
variables = {}
for layer in ("defaults", "vars"):
    if not os.path.exists(f"{role}/{layer}/main.yml"):
        continue
    with open(f"{role}/{layer}/main.yml", encoding="utf-8") as handle:
        variables.update({k: trusted(v) for k, v in (yaml.safe_load(handle) or {}).items()})
variables.update(extra)
with open(f"{role}/templates/{template_name}", encoding="utf-8") as handle:
    template = handle.read()
templar = Templar(loader=DataLoader(), variables=variables)
sys.stdout.write(str(templar.template(trust_as_template(template))))
"""


def render_role_template(role: str, template: str, variables: dict[str, Any]) -> str:
    """The text ``roles/<role>/templates/<template>`` renders to with the role's defaults and vars and ``variables``."""
    child = subprocess.run([sys.executable, "-c", _RENDER, os.path.join(ROLES, role), template],
                           input=json.dumps(variables), capture_output=True, text=True, check=False, timeout=120)
    if child.returncode != 0:
        raise AssertionError(f"rendering {role}/templates/{template} failed: {child.stderr[-2000:]}")
    return child.stdout
