# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module does around the engine: its argument spec, library checks, error mapping, the job's run."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.doctorq.backup.plugins.module_utils import pg as pgutil
from ansible_collections.doctorq.backup.plugins.module_utils import pgbackrest as pgbrutil
from ansible_collections.doctorq.backup.plugins.module_utils import s3 as s3util
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError
from ansible_collections.doctorq.backup.plugins.module_utils.notify import notify_argument_spec


def require_libs(module: AnsibleModule, *, postgres: bool = True, s3: bool = False) -> None:
    """Fail with ``missing_required_lib`` after argument parsing, as house style asks."""
    for needed, library in ((postgres, pgutil.PSYCOPG2), (s3, s3util.BOTO3)):
        if needed and not library.present:
            module.fail_json(msg=missing_required_lib(library.pip), exception=str(library.error))


@contextlib.contextmanager
def engine_errors(module: AnsibleModule) -> Iterator[None]:
    """Turn the engine's errors into ``fail_json``; their messages never hold secrets."""
    try:
        yield
    except DoctorqError as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__)


def exit_with(module: AnsibleModule, result: dict) -> None:
    """``fail_json`` when the engine reported a failure, else ``exit_json``."""
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


def module_spec(options: dict[str, Any], *, postgres: bool = True, s3: bool = True,
                db_required: bool = False, pgbackrest: bool = False) -> dict[str, Any]:
    """A module's whole argument spec: the connection options (``postgres``), its own ``options``, ``s3``.

    ``pgbackrest``: a pgBackRest job's (pgbackrest_backup, pg_pitr_restore) - the stanza and its pgBackRest
    (doc fragment ``doctorq.backup.pgbackrest``), ``log_dir`` and ``notification``.
    """
    spec = pgutil.postgres_argument_spec() if postgres else {}
    if pgbackrest:
        spec.update(pgbrutil.pgbackrest_argument_spec(), **pgbrutil.log_dir_argument_spec(), **notify_argument_spec())
    spec.update(options)
    if s3:
        spec["s3"] = s3util.s3_argument_spec()
    if db_required:
        spec["db"] = dict(spec["db"], required=True)
    return spec


def run_engine(module: AnsibleModule, job: Callable[[], dict[str, Any]], *, postgres: bool = True,
               s3: bool | None = None) -> None:
    """Every module's tail: the libraries it needs, the engine's job, its result or its error.

    ``s3`` unset: boto3 is needed when the task has an ``s3`` option or an
    ``s3://`` ``source``.
    """
    if s3 is None:
        params = module.params
        s3 = bool(params.get("s3")) or str(params.get("source") or "").startswith("s3://")
    require_libs(module, postgres=postgres, s3=s3)
    with engine_errors(module):
        result = job()
    exit_with(module, result)


def run_job(options: dict[str, Any], job: Callable[[dict[str, Any]], Any], run: Callable[..., dict[str, Any]], *,
            postgres: bool = True, s3: bool = True, db_required: bool = False, pgbackrest: bool = False,
            **checks: Any) -> None:
    """The whole ``main()`` of a module that runs one engine job, check mode included.

    ``options``: the job's own (``module_spec`` adds the connection options,
    ``s3`` and a pgBackRest job's); ``job``: the job from the module's parameters (``Job.from_params``);
    ``run``: the engine's entry point, ``run(job, check_mode=...)``; ``checks``:
    AnsibleModule's own (``required_one_of``...).
    """
    module = AnsibleModule(argument_spec=module_spec(options, postgres=postgres, s3=s3, db_required=db_required,
                                                     pgbackrest=pgbackrest), supports_check_mode=True, **checks)
    run_engine(module, lambda: run(job(module.params), check_mode=module.check_mode), postgres=postgres)
