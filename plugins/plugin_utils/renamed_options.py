# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action plugin of a module whose old option spellings are still read: translate, warn, run the module.

The translation is ``module_utils/renamed_options.py``'s table (``translate``;
the commands that read the same options from a config use it too), after a
module's own where it has one (``TRANSLATE``: task args -> (args, [(old, new)]),
from ``module_utils``). The module itself only ever sees the new spellings, and
its documentation lists only those. When the old options ask for a job
another module does now (``pg_backup kind=incremental``), that module runs,
through its own action plugin when it has one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.renamed_options import (
    COLLECTION, REMOVED_IN, Moved, deprecation, translate,
)

display = Display()


class RenamedOptionsAction(ActionBase):
    """Runs the module (or the one that took its job over) with today's spellings; a deprecation names each old one."""

    TRANSLATE: Optional[Callable[[dict[str, Any]], tuple[dict[str, Any], Moved]]] = None
    REMOVED_IN = REMOVED_IN
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        module = type(self).__module__.rpartition(".")[2]
        try:
            args, notes = dict(self._task.args), []
            if self.TRANSLATE is not None:
                args, moved = self.TRANSLATE(args)  # pylint: disable=not-callable
                notes = [deprecation(module, moved, self.REMOVED_IN)] if moved else []
            done = translate(module, args)
            target, args, notes = done.module, done.args, notes + done.deprecations
        except ConfigError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        for note in notes:
            display.deprecated(note, version=self.REMOVED_IN, collection_name=COLLECTION)
        if target != module:
            result.update(self._hand_off(f"{COLLECTION}.{target}", args, task_vars))
            return result
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result.update(self._execute_module(module_name=f"{COLLECTION}.{module}", module_args=args,
                                           task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)  # pylint: disable=protected-access
        return result

    def _hand_off(self, fqcn: str, args: dict[str, Any], task_vars: dict[str, Any] | None) -> dict[str, Any]:
        """Run ``fqcn`` as a task of its own would: through its action plugin (its own old spellings), else directly."""
        task = self._task.copy()
        task.args = args
        task.action = fqcn
        handler = self._shared_loader_obj.action_loader.get(
            fqcn, task=task, connection=self._connection, play_context=self._play_context, loader=self._loader,
            templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        if handler is not None:
            return handler.run(task_vars=task_vars)
        return self._execute_module(module_name=fqcn, module_args=args, task_vars=task_vars)
