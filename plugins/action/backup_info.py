# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_info: its old option spellings (module_utils/renamed_options.py's table) translated, with a deprecation."""

from __future__ import annotations

from ansible_collections.doctorq.backup.plugins.plugin_utils.renamed_options import RenamedOptionsAction


class ActionModule(RenamedOptionsAction):
    pass
