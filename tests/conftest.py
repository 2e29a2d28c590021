"""The one shared conftest: real servers, sample data, module and playbook runners.

Fixtures (see tests/README.md for examples):
    pg_server      session   PostgreSQL 15 on 127.0.0.1 (password auth over TCP)
    pg_db          function  fresh database with the sample schema; its name
    table_digest   -         table_digest(pg_server, dbname) -> {schema.table: (rows, md5)}
    seaweed        session   SeaweedFS S3 endpoint
    moto_s3        session   moto S3 endpoint (Glacier semantics, no checksum checks)
    pg17_bin_dir   session   PostgreSQL 17 client tools (pg_dump, pg_dumpall, pg_restore, psql)
    s3_bucket      function  fresh SeaweedFS bucket as the modules' `s3` option
    moto_bucket    function  fresh moto bucket as the modules' `s3` option
    run_module     -         run_module(name, args, check_mode=False, diff=False) -> result dict
    ansible_playbook -       ansible_playbook(path, extra_vars=None, check=False) -> CompletedProcess

Servers start on first use, once per session (per xdist worker), and stop at
the end of the session. With DOCTORQ_TESTBED_DIR set to a bed started by
`python scripts/testbed.py up --dir DIR`, the fixtures use that bed instead.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import warnings
from typing import Any, Callable, Iterator

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
COLLECTIONS_DIR = os.path.join(REPO_ROOT, ".build", "collections")
COLLECTION_LINK = os.path.join(COLLECTIONS_DIR, "ansible_collections", "doctorq", "backup")
COLLECTION_PACKAGE = "ansible_collections.doctorq.backup"


def _ensure_collection_path() -> None:
    """Expose the checkout as ansible_collections.doctorq.backup (what scripts/collection-path.sh does)."""
    if not os.path.islink(COLLECTION_LINK) or os.path.realpath(COLLECTION_LINK) != os.path.realpath(REPO_ROOT):
        os.makedirs(os.path.dirname(COLLECTION_LINK), exist_ok=True)
        tmp = f"{COLLECTION_LINK}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.relpath(REPO_ROOT, os.path.dirname(COLLECTION_LINK)), tmp)
        os.replace(tmp, COLLECTION_LINK)  # atomic: safe with xdist workers racing
    if COLLECTIONS_DIR not in sys.path:
        sys.path.insert(0, COLLECTIONS_DIR)
    os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_DIR


_ensure_collection_path()
for _path in (TESTS_DIR, os.path.join(REPO_ROOT, "scripts")):  # backup_support, and the test bed (scripts/testbed.py)
    if _path not in sys.path:
        sys.path.insert(0, _path)

import testbed  # noqa: E402  pylint: disable=wrong-import-position
from testbed import PgServer, S3Server, Testbed, drop_database, empty_bucket  # noqa: E402  pylint: disable=wrong-import-position

table_digest_fn = testbed.table_digest
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


# --------------------------------------------------------------------------
# markers, signals


def _sigterm_to_interrupt(signum, frame):  # pylint: disable=unused-argument
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:  # pylint: disable=unused-argument
    """A SIGTERM (CI timeout, `timeout`, kill) stops pytest like Ctrl-C: fixtures tear down, servers stop."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/faults is marked `integration` (they talk to real servers)."""
    dirs = tuple(os.path.join(TESTS_DIR, d) + os.sep for d in ("integration", "faults"))
    for item in items:
        if str(item.path).startswith(dirs):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------
# servers


@pytest.fixture(scope="session")
def _testbed() -> Iterator[Testbed]:
    external = os.environ.get("DOCTORQ_TESTBED_DIR")
    bed = Testbed.attach(external) if external else Testbed()
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="session")
def pg_server(_testbed: Testbed) -> PgServer:
    """PostgreSQL 15: host, port, user, password, socket_dir, bin_dir, connect(db), params(db)."""
    return _testbed.postgres()


@pytest.fixture(scope="session")
def seaweed(_testbed: Testbed) -> S3Server:
    """SeaweedFS: endpoint_url, access_key, secret_key, region, client()."""
    return _testbed.seaweed()


@pytest.fixture(scope="session")
def moto_s3(_testbed: Testbed) -> S3Server:
    """moto: endpoint_url, access_key, secret_key, region, client()."""
    return _testbed.moto()


@pytest.fixture(scope="session")
def pg17_bin_dir() -> str:
    """The PostgreSQL 17 client tools (scripts/pg-client-newer.sh), as the modules' ``pg_bin_dir``.

    Missing tools are an error, as a missing server is: setup.sh builds them.
    """
    try:
        return testbed.pg17_bin_dir()
    except testbed.TestbedError as exc:
        pytest.fail(str(exc), pytrace=False)


# --------------------------------------------------------------------------
# sample database

SAMPLE_SCHEMA = """
CREATE SCHEMA billing;

CREATE TABLE public.customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    city        text,
    created_at  timestamptz NOT NULL,
    profile     jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE public.products (
    id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku     text NOT NULL UNIQUE,
    title   text NOT NULL,
    price   numeric(10, 2) NOT NULL CHECK (price >= 0)
);

CREATE TABLE public.orders (
    id           bigserial PRIMARY KEY,
    customer_id  integer NOT NULL REFERENCES public.customers (id),
    ordered_at   timestamptz NOT NULL,
    status       text NOT NULL,
    note         text
);
CREATE INDEX orders_customer_id_idx ON public.orders (customer_id);
CREATE INDEX orders_ordered_at_idx ON public.orders (ordered_at DESC);

CREATE TABLE public.order_items (
    order_id    bigint NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
    product_id  integer NOT NULL REFERENCES public.products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

CREATE SEQUENCE public.invoice_number_seq START 100000;

CREATE TABLE billing.invoices (
    id         integer PRIMARY KEY DEFAULT nextval('public.invoice_number_seq'),
    order_id   bigint NOT NULL REFERENCES public.orders (id),
    amount     numeric(12, 2) NOT NULL,
    issued_on  date NOT NULL,
    memo       text
);

CREATE VIEW public.customer_totals AS
SELECT c.id, c.name, count(DISTINCT o.id) AS orders, coalesce(sum(oi.quantity * p.price), 0) AS total
FROM public.customers c
LEFT JOIN public.orders o ON o.customer_id = c.id
LEFT JOIN public.order_items oi ON oi.order_id = o.id
LEFT JOIN public.products p ON p.id = oi.product_id
GROUP BY c.id, c.name;

-- deterministic data: the same sample every time
INSERT INTO public.customers (name, email, city, created_at, profile)
SELECT
    (ARRAY['Zoë', 'José', 'Łukasz', 'Ingrid', 'Søren', 'Chloé', '美咲', 'Αθηνά', 'Ольга', 'Ahmed'])[1 + i % 10]
        || ' ' || (ARRAY['Müller', 'Núñez', 'Kowalczyk', 'O''Brien', 'Håkansson', 'Dubois', '田中', 'Παπαδοπούλου'])[1 + i % 8],
    'customer' || i || '@example.test',
    (ARRAY['Zürich', 'São Paulo', 'Kraków', 'Reykjavík', '東京', 'Αθήνα', 'Москва', 'Montréal'])[1 + i % 8],
    timestamptz '2024-01-01 00:00:00+00' + i * interval '3 hours 7 minutes',
    jsonb_build_object('tier', (ARRAY['free', 'pro', 'enterprise'])[1 + i % 3], 'tags', jsonb_build_array('t' || i % 5, 'ünïcode'),
                       'newsletter', i % 2 = 0)
FROM generate_series(1, 200) AS i;

INSERT INTO public.products (sku, title, price)
SELECT 'SKU-' || lpad(i::text, 4, '0'),
       (ARRAY['Crème brûlée kit', 'Smørrebrød tray', 'Café ☕ beans', 'Jalapeño sauce', 'Pâté en croûte'])[1 + i % 5] || ' #' || i,
       round((i * 3.17)::numeric % 250 + 0.99, 2)
FROM generate_series(1, 50) AS i;

INSERT INTO public.orders (customer_id, ordered_at, status, note)
SELECT 1 + (i * 7) % 200,
       timestamptz '2024-02-01 08:00:00+00' + i * interval '47 minutes',
       (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + i % 4],
       CASE WHEN i % 9 = 0 THEN 'Lieferung bitte an die Rezeption – danke! ' || i END
FROM generate_series(1, 1000) AS i;

INSERT INTO public.order_items (order_id, product_id, quantity)
SELECT o, 1 + (o * 13 + k * 17) % 50, 1 + (o + k) % 5
FROM generate_series(1, 1000) AS o, generate_series(1, 2) AS k;

INSERT INTO billing.invoices (order_id, amount, issued_on, memo)
SELECT o.id, sum(oi.quantity * p.price), (o.ordered_at AT TIME ZONE 'UTC')::date + 1, 'Rechnung № ' || o.id
FROM public.orders o
JOIN public.order_items oi ON oi.order_id = o.id
JOIN public.products p ON p.id = oi.product_id
WHERE o.status IN ('paid', 'shipped')
GROUP BY o.id, o.ordered_at;

ANALYZE;
"""


@pytest.fixture(scope="session")
def _sample_template(pg_server: PgServer) -> Iterator[str]:
    """A template database holding the sample, copied by pg_db (CREATE DATABASE ... TEMPLATE)."""
    name = f"doctorq_sample_tpl_{secrets.token_hex(4)}"
    conn = pg_server.connect("postgres")
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
    conn.close()
    conn = pg_server.connect(name)
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute(SAMPLE_SCHEMA)
    conn.commit()
    conn.close()
    yield name
    drop_database(pg_server, name)


def _db_name_for(node_name: str) -> tuple[str, str]:
    token = secrets.token_hex(4)
    stem = re.sub(r"[^a-z0-9]+", "_", node_name.lower()).strip("_")[:40] or "db"
    return f"t_{stem}_{token}", token


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, pg_server: PgServer, _sample_template: str) -> Iterator[str]:
    """Name of a fresh database holding the sample schema and ~3,700 rows.

    Afterwards it is dropped, together with any database whose name contains
    its unique token (restores into `<name>_restore`, swapped-out `<name>_old_...`).
    """
    name, token = _db_name_for(request.node.name)
    conn = pg_server.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_sample_template}"')
    finally:
        conn.close()
    yield name
    conn = pg_server.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0", (token,))
            leftovers = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    for db in leftovers:
        drop_database(pg_server, db)


@pytest.fixture
def table_digest() -> Callable[[PgServer, str], dict[str, tuple[int, str]]]:
    """table_digest(pg_server, dbname) -> {'schema.table': (row count, md5 of rows)}."""
    return table_digest_fn


# --------------------------------------------------------------------------
# buckets


def _bucket(server: S3Server, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40] or "bucket"
    name = f"t-{stem}-{secrets.token_hex(4)}".replace("--", "-")
    client = server.client()
    client.create_bucket(Bucket=name)
    yield server.s3_option(name)
    try:
        empty_bucket(client, name)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # a bucket a test locked (Object Lock compliance) may not be deletable;
        # that is not the test's failure, but say so
        warnings.warn(f"could not delete test bucket {name} on {server.name}: {exc}", stacklevel=1)


@pytest.fixture
def s3_bucket(seaweed: S3Server, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A fresh SeaweedFS bucket, as the modules' `s3` option; emptied and deleted afterwards."""
    yield from _bucket(seaweed, request)


@pytest.fixture
def moto_bucket(moto_s3: S3Server, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A fresh moto bucket, as the modules' `s3` option; emptied and deleted afterwards."""
    yield from _bucket(moto_s3, request)


# --------------------------------------------------------------------------
# modules in-process


def _reset_module_globals() -> None:
    """Forget warnings/deprecations a previous in-process module run left behind."""
    from ansible.module_utils.common import warnings as ansible_warnings  # pylint: disable=import-outside-toplevel

    for attr in ("_global_warnings", "_global_deprecations"):
        store = getattr(ansible_warnings, attr, None)
        if isinstance(store, (dict, list)):
            store.clear()


@contextlib.contextmanager
def _module_args(args: dict[str, Any]) -> Iterator[None]:
    try:
        from ansible.module_utils.testing import patch_module_args  # pylint: disable=import-outside-toplevel
    except ImportError:  # ansible-core < 2.19
        from ansible.module_utils import basic  # pylint: disable=import-outside-toplevel
        from ansible.module_utils.common.text.converters import to_bytes  # pylint: disable=import-outside-toplevel

        old = basic._ANSIBLE_ARGS  # pylint: disable=protected-access
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))  # pylint: disable=protected-access
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = old  # pylint: disable=protected-access
        return
    with patch_module_args(args):
        yield


def _parse_module_output(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)
    return None


def _event_msg(item: Any) -> Any:
    if isinstance(item, dict) and isinstance(item.get("event"), dict):
        return item["event"].get("msg")
    return item


def _flatten_messages(result: dict[str, Any]) -> None:
    """Show warnings and deprecations as a playbook user sees them.

    ansible-core 2.19 sends them over the wire as tagged WarningSummary /
    DeprecationSummary objects; the controller turns them into messages.
    Warnings become strings, deprecations dicts with msg/version/date/collection_name.
    """
    if isinstance(result.get("warnings"), list):
        result["warnings"] = [_event_msg(w) for w in result["warnings"]]
    if isinstance(result.get("deprecations"), list):
        flat = []
        for dep in result["deprecations"]:
            if isinstance(dep, dict) and "event" in dep:
                deprecator = dep.get("deprecator") or {}
                flat.append({"msg": _event_msg(dep), "version": dep.get("version"), "date": dep.get("date"),
                             "collection_name": deprecator.get("resolved_name") if isinstance(deprecator, dict) else None})
            else:
                flat.append(dep)
        result["deprecations"] = flat


class ModuleRunner:
    """Runs a module's main() in this process and returns its result dict."""

    def __init__(self, tmp_dir: str) -> None:
        self.tmp_dir = tmp_dir
        self.calls = 0

    def __call__(self, module_name: str, args: dict[str, Any], check_mode: bool = False, diff: bool = False) -> dict[str, Any]:
        """module_name: a module of this collection (`pg_backup`) or a full dotted path.

        The result is the JSON the module printed; fail_json results carry
        `failed: True`. An exception escaping main() propagates to the test.
        """
        dotted = module_name if "." in module_name else f"{COLLECTION_PACKAGE}.plugins.modules.{module_name}"
        module = importlib.import_module(dotted)
        self.calls += 1
        tmpdir = os.path.join(self.tmp_dir, f"module-tmp-{self.calls}")
        os.makedirs(tmpdir, exist_ok=True)
        full_args = dict(args)
        full_args.update(_ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_tmpdir=tmpdir,
                         _ansible_remote_tmp=tmpdir, _ansible_keep_remote_files=False)
        _reset_module_globals()
        out = io.StringIO()
        code: Any = None
        with _module_args(full_args), contextlib.redirect_stdout(out):
            try:
                module.main()
            except SystemExit as exc:
                code = exc.code
        printed = out.getvalue()
        result = _parse_module_output(printed)
        if result is None:
            raise AssertionError(f"{dotted} printed no result JSON (exit code {code!r}); output was:\n{printed}")
        _flatten_messages(result)
        if code not in (0, None) or result.get("failed"):
            result["failed"] = True
        return result


@pytest.fixture
def run_module(tmp_path) -> ModuleRunner:
    """run_module(module_name, args, check_mode=False, diff=False) -> result dict."""
    return ModuleRunner(str(tmp_path))


# --------------------------------------------------------------------------
# playbooks


def _venv_tool(name: str) -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.access(candidate, os.X_OK) else name


class PlaybookRunner:
    """Runs the real ansible-playbook against localhost with this checkout as doctorq.backup."""

    def __init__(self, tmp_dir: str) -> None:
        self.tmp_dir = tmp_dir
        self.calls = 0

    def __call__(self, path: str, extra_vars: dict[str, Any] | None = None, check: bool = False, *,
                 inventory: str | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
                 timeout: float = 1800) -> subprocess.CompletedProcess:
        """path: playbook (relative paths are taken from the repo root).

        extra_vars go through a 0600 file (`-e @file`), never argv. The
        default inventory is localhost with the local connection and this
        interpreter (it has boto3 and psycopg2).
        """
        self.calls += 1
        work = os.path.join(self.tmp_dir, f"playbook-{self.calls}")
        os.makedirs(work, exist_ok=True)
        if inventory is None:
            inventory = os.path.join(work, "inventory.ini")
            with open(inventory, "w", encoding="utf-8") as handle:
                handle.write(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        argv = [_venv_tool("ansible-playbook"), "-i", inventory]
        if extra_vars:
            vars_file = os.path.join(work, "extra-vars.json")
            fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(extra_vars, handle)
            argv += ["-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        argv += list(args or [])
        argv.append(path if os.path.isabs(path) else os.path.join(REPO_ROOT, path))
        full_env = dict(os.environ)
        full_env.update(
            ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_DIR,
            ANSIBLE_LOCAL_TEMP=os.path.join(work, "local-tmp"),
            ANSIBLE_REMOTE_TEMP=os.path.join(work, "remote-tmp"),
            ANSIBLE_RETRY_FILES_ENABLED="false",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_HOST_KEY_CHECKING="false",
            ANSIBLE_DEPRECATION_WARNINGS="true",
            PY_COLORS="0",
        )
        full_env.pop("PYTEST_CURRENT_TEST", None)
        full_env.update(env or {})
        return subprocess.run(argv, cwd=REPO_ROOT, env=full_env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture
def ansible_playbook(tmp_path) -> PlaybookRunner:
    """ansible_playbook(path, extra_vars=None, check=False) -> subprocess.CompletedProcess."""
    return PlaybookRunner(str(tmp_path))
