# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_pitr_restore: its flat option spellings of before (``target_time``, ``scratch_dir``, ``drill=true``...) grouped."""

from __future__ import annotations

from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import translate_legacy
from ansible_collections.doctorq.backup.plugins.plugin_utils.renamed_options import RenamedOptionsAction


class ActionModule(RenamedOptionsAction):
    TRANSLATE = staticmethod(translate_legacy)
