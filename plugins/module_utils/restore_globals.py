# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup's globals (roles, tablespaces) restored before its database, for a restore onto a new server.

The globals file is pg_dumpall's SQL. psql runs it with ``ON_ERROR_STOP``,
so no error is ignored; the roles and tablespaces that exist already are
kept as they are by leaving out their CREATE statements, so the server's
own superuser, in every globals file, is not an error.
"""

from __future__ import annotations

import re
from typing import Callable

from ansible_collections.doctorq.backup.plugins.module_utils import pipeline, procs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient

# pg_dumpall's CREATE of a role or a tablespace: one line, the name as fmtId writes it
_CREATE_GLOBAL = re.compile(rb'^CREATE (ROLE|TABLESPACE) ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)(?:;$| OWNER )')


def skip_existing(script: bytes, roles: set[str], tablespaces: set[str]) -> tuple[bytes, int]:
    """pg_dumpall's globals without the CREATE of the roles and tablespaces that exist; and how many were left out."""
    out, skipped = [], 0
    for line in script.splitlines(keepends=True):
        match = _CREATE_GLOBAL.match(line.rstrip(b"\r\n"))
        if match:
            name = match.group(2).decode("utf-8", "replace")
            if name.startswith('"'):
                name = name[1:-1].replace('""', '"')
            if name in (roles if match.group(1) == b"ROLE" else tablespaces):
                skipped += 1
                continue
        out.append(line)
    return b"".join(out), skipped


def restore_globals(pg: PgClient, path: str, compression: str, log: Callable[[str], None]) -> None:
    """Run the globals file ``path`` through psql, the existing roles and tablespaces left out (``skip_existing``)."""
    decompress = pipeline.decompressor_argv(compression)
    try:
        with open(path, "rb") as inp:
            if decompress:
                with procs.Pipe([decompress], stdin=inp) as pipe:
                    script = pipe.stdout.read()
                    pipe.wait()
            else:
                script = inp.read()
        roles = {r for (r,) in pg.query("SELECT rolname FROM pg_roles", db="postgres")}
        spaces = {t for (t,) in pg.query("SELECT spcname FROM pg_tablespace", db="postgres")}
        script, kept = skip_existing(script, roles, spaces)
        procs.run([pg.tool("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
                  env=pg.env("postgres"), input=script)
    except procs.ProcessFailed as exc:
        raise PgError(f"restoring the globals (roles, tablespaces) from {path} failed: {pg.explain(str(exc))}. "
                      "No database was restored; roles created before the failing statement stay. Fix the cause "
                      "(restoring roles takes a superuser as login_user), or restore without load.globals.") from None
    log(f"Globals restored ({kept} existing role(s)/tablespace(s) kept as they were)")
