# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the notification option; edit together with module_utils/notify.py:notify_argument_spec."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  notification:
    description:
      - How the run tells people and monitoring its outcome. A failed notification or metrics file is a warning,
        never a failed run.
      - Until 1.0.0 the suboptions are also read flat, as the options they were (O(notification.webhook_url) as
        C(webhook_url) and so on), with a deprecation warning.
    type: dict
    suboptions:
      webhook_url:
        description:
          - Webhook notified of the outcome. The URL is treated as a secret (Slack keeps the token in it).
        type: str
      webhook_format:
        description:
          - V(slack) posts a Slack message (a C(text) field); V(json) posts the run's facts as a JSON object.
        type: str
        choices: [slack, json]
        default: slack
      notify_on:
        description:
          - Which outcomes go to the webhook (metrics are written for every run).
          - When unset, V(always), except for M(doctorq.backup.restore_drill), which notifies failures only.
        type: str
        choices: [always, failure, never]
      metrics_dir:
        description:
          - Directory of node_exporter's textfile collector; a C(doctorq_<job>_<db>.prom) file with the last run's
            status, time of the last success, duration and size is written there.
        type: path
"""
