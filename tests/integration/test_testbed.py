"""The test bed itself: if these fail, every other integration failure is suspect."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import psycopg2
import pytest
from botocore.exceptions import ClientError

import testbed

pytestmark = pytest.mark.integration


# ---- PostgreSQL


def test_pg_password_over_tcp(pg_server):
    conn = pg_server.connect("postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, inet_server_addr()::text, current_setting('server_version_num')::int")
        user, addr, version = cur.fetchone()
        cur.execute("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND '127.0.0.1/32' = address || '/32'")
        methods = {row[0] for row in cur.fetchall()}
    conn.close()
    assert user == "postgres"
    assert addr == "127.0.0.1/32"
    assert version // 10000 == 15
    assert methods == {"scram-sha-256"}


def test_pg_wrong_password_is_rejected(pg_server):
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=pg_server.host, port=pg_server.port, user="postgres", password="not-the-password",
                         dbname="postgres", connect_timeout=5)


def test_pg_listens_on_loopback_only(pg_server):
    assert pg_server.query("SHOW listen_addresses") == [("127.0.0.1",)]
    assert os.path.exists(os.path.join(pg_server.socket_dir, f".s.PGSQL.{pg_server.port}"))
    assert os.path.exists(os.path.join(pg_server.bin_dir, "pg_dump"))


def test_pg_params_shape(pg_server):
    assert pg_server.params("somedb") == {
        "login_host": "127.0.0.1", "login_port": pg_server.port, "login_user": "postgres",
        "login_password": pg_server.password, "db": "somedb",
    }


def test_pg_db_sample_and_digest(pg_server, pg_db, table_digest):
    digest = table_digest(pg_server, pg_db)
    assert set(digest) == {"public.customers", "public.products", "public.orders", "public.order_items",
                           "billing.invoices"}
    assert digest["public.order_items"][0] == 2000
    assert sum(count for count, _md5 in digest.values()) > 2000
    rows = pg_server.query("SELECT name, city FROM customers WHERE name LIKE 'Zoë%%' ORDER BY id LIMIT 1", dbname=pg_db)
    assert rows[0][0].startswith("Zoë")
    assert pg_server.query("SELECT count(*) FROM customer_totals", dbname=pg_db) == [(200,)]
    # a copy made with the stock tools digests the same; a changed row does not
    copy = pg_db + "_copy"
    env = {**os.environ, **pg_server.libpq_env()}
    pg_server.query(f'CREATE DATABASE "{copy}" TEMPLATE template0')
    dump = subprocess.run([os.path.join(pg_server.bin_dir, "pg_dump"), "-Fc", "-d", pg_db], env=env,
                          capture_output=True, check=True).stdout
    subprocess.run([os.path.join(pg_server.bin_dir, "pg_restore"), "--exit-on-error", "-d", copy], input=dump,
                   env=env, capture_output=True, check=True)
    assert table_digest(pg_server, copy) == digest
    pg_server.query("UPDATE billing.invoices SET memo = memo || '!' WHERE id = (SELECT min(id) FROM billing.invoices)",
                    dbname=copy)
    changed = table_digest(pg_server, copy)
    assert changed["billing.invoices"] != digest["billing.invoices"]
    assert changed["public.orders"] == digest["public.orders"]


def test_pg_db_is_fresh_each_time(pg_server, pg_db):
    # the previous test changed its copy; this database is untouched
    assert pg_server.query("SELECT count(*) FROM billing.invoices WHERE memo LIKE '%%!'", dbname=pg_db) == [(0,)]


# ---- S3


def test_seaweed_bucket_roundtrip(seaweed, s3_bucket):
    assert set(s3_bucket) == {"bucket", "endpoint_url", "access_key", "secret_key", "region"}
    assert s3_bucket["endpoint_url"].startswith("http://127.0.0.1:")
    client = seaweed.client()
    client.put_object(Bucket=s3_bucket["bucket"], Key="a/b.txt", Body=b"hello \xe2\x98\x95")
    body = client.get_object(Bucket=s3_bucket["bucket"], Key="a/b.txt")["Body"].read()
    assert body == "hello ☕".encode()
    listed = client.list_objects_v2(Bucket=s3_bucket["bucket"], Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.txt"]


def test_seaweed_rejects_wrong_secret(seaweed):
    bad = testbed.S3Server("SeaweedFS", seaweed.endpoint_url, seaweed.access_key, "wrong-secret")
    with pytest.raises(ClientError) as err:
        bad.client().list_buckets()
    assert err.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_seaweed_bucket_cleanup_handles_versions(seaweed, s3_bucket):
    client = seaweed.client()
    bucket = s3_bucket["bucket"]
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        client.put_object(Bucket=bucket, Key="k", Body=body)
    client.delete_object(Bucket=bucket, Key="k")
    versions = client.list_object_versions(Bucket=bucket)
    assert len(versions.get("Versions", [])) == 2
    assert len(versions.get("DeleteMarkers", [])) == 1
    # the fixture's teardown must remove all of this and the bucket


def test_moto_answers(moto_s3, moto_bucket):
    client = moto_s3.client()
    client.put_object(Bucket=moto_bucket["bucket"], Key="cold", Body=b"x", StorageClass="GLACIER")
    with pytest.raises(ClientError) as err:
        client.get_object(Bucket=moto_bucket["bucket"], Key="cold")
    assert err.value.response["Error"]["Code"] == "InvalidObjectState"
    assert moto_bucket["endpoint_url"] == moto_s3.endpoint_url != ""


def _listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every listening IPv4/IPv6 TCP socket, from /proc (no `ss` needed)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            next(handle)
            for line in handle:
                local, state = line.split()[1], line.split()[3]
                if state != "0A":  # LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                if len(addr_hex) == 8:
                    addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
                else:
                    raw = bytes.fromhex(addr_hex)
                    addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                found.append((addr, int(port_hex, 16)))
    return found


def test_servers_bind_loopback_only(pg_server, seaweed, moto_s3, _testbed):
    ports = {pg_server.port, int(seaweed.endpoint_url.rsplit(":", 1)[1]), int(moto_s3.endpoint_url.rsplit(":", 1)[1])}
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    # every port of weed mini (master, volume, filer, s3, admin and their gRPC)
    ports |= set(_testbed.state.seaweed.get("ports", {}).values())
    listening = _listening_sockets()
    assert ports <= {port for _addr, port in listening}
    for addr, port in listening:
        if port in ports:
            assert addr == "127.0.0.1", (addr, port)


# ---- run_module


ECHO_MODULE = textwrap.dedent('''
    from ansible.module_utils.basic import AnsibleModule


    def main():
        module = AnsibleModule(
            argument_spec=dict(
                name=dict(type="str", required=True),
                secret=dict(type="str", no_log=True),
                fail=dict(type="bool", default=False),
            ),
            supports_check_mode=True,
        )
        if module.params["fail"]:
            module.fail_json(msg="asked to fail for " + module.params["name"])
        module.warn("a warning")
        result = dict(changed=not module.check_mode, name=module.params["name"], check_mode=module.check_mode,
                      echoed_secret=module.params["secret"])
        if module._diff:
            result["diff"] = dict(before="", after=module.params["name"])
        module.exit_json(**result)


    if __name__ == "__main__":
        main()
''')


@pytest.fixture
def echo_module(tmp_path, monkeypatch):
    pkg = tmp_path / "tb_throwaway_modules"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "echo.py").write_text(ECHO_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tb_throwaway_modules.echo"
    for mod in [m for m in sys.modules if m.startswith("tb_throwaway_modules")]:
        del sys.modules[mod]


def test_run_module_exit_json(run_module, echo_module):
    result = run_module(echo_module, {"name": "db1", "secret": "s3cr3t-value"})
    assert result["changed"] is True
    assert result["name"] == "db1"
    assert result["check_mode"] is False
    assert "failed" not in result
    # no_log values are masked wherever they appear in the result
    assert result["echoed_secret"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert "s3cr3t-value" not in json.dumps(result)
    assert result["warnings"] == ["a warning"]
    assert "diff" not in result


def test_run_module_check_and_diff(run_module, echo_module):
    result = run_module(echo_module, {"name": "db2"}, check_mode=True, diff=True)
    assert result["changed"] is False
    assert result["check_mode"] is True
    assert result["diff"] == {"before": "", "after": "db2"}
    # warnings of the previous run do not leak into this one
    assert result["warnings"] == ["a warning"]


def test_run_module_fail_json(run_module, echo_module):
    result = run_module(echo_module, {"name": "db3", "fail": True})
    assert result["failed"] is True
    assert result["msg"] == "asked to fail for db3"


def test_run_module_argument_error(run_module, echo_module):
    result = run_module(echo_module, {"unknown_option": 1})
    assert result["failed"] is True
    assert "name" in result["msg"]


def test_run_module_builtin_ping(run_module):
    assert run_module("ansible.modules.ping", {"data": "hi"})["ping"] == "hi"


def test_collection_is_importable():
    import ansible_collections.doctorq.backup as collection  # pylint: disable=import-outside-toplevel

    assert os.path.realpath(list(collection.__path__)[0]) == os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
    assert os.environ["ANSIBLE_COLLECTIONS_PATH"].endswith(os.path.join(".build", "collections"))


# ---- ansible-playbook


def test_ansible_playbook_runs(ansible_playbook, tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(textwrap.dedent("""
        - name: Test bed check
          hosts: all
          gather_facts: false
          tasks:
            - name: Show the extra var
              ansible.builtin.debug:
                msg: "greeting={{ greeting }} check={{ ansible_check_mode }}"
            - name: Write a file unless in check mode
              ansible.builtin.copy:
                content: "x"
                dest: "{{ target }}"
                mode: "0600"
    """))
    target = tmp_path / "out.txt"
    proc = ansible_playbook(str(playbook), extra_vars={"greeting": "héllo", "target": str(target)}, check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "greeting=héllo check=True" in proc.stdout
    assert not target.exists()
    proc = ansible_playbook(str(playbook), extra_vars={"greeting": "again", "target": str(target)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert target.read_text() == "x"


def test_cli_up_and_down(tmp_path):
    bed_dir = tmp_path / "bed"
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "testbed.py")
    up = subprocess.run([sys.executable, script, "up", "--dir", str(bed_dir), "--only", "pg", "--only", "moto"],
                        capture_output=True, text=True, timeout=300, check=False)
    try:
        assert up.returncode == 0, up.stderr
        env = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        assert (bed_dir / "testbed.env").stat().st_mode & 0o077 == 0
        conn = psycopg2.connect(host=env["PGHOST"], port=int(env["PGPORT"]), user=env["PGUSER"],
                                password=env["PGPASSWORD"].strip("'"), dbname="postgres", connect_timeout=5)
        conn.close()
        moto = testbed.S3Server("moto", env["DOCTORQ_MOTO_ENDPOINT"], "testing", "testing")
        moto.client().list_buckets()
    finally:
        down = subprocess.run([sys.executable, script, "down", "--dir", str(bed_dir)], capture_output=True, text=True,
                              timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert not bed_dir.exists()
