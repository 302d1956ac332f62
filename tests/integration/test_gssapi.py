"""GSS-API (RFC 1961, method 01) against a throwaway MIT realm: the gateway is the acceptor,
python3-gssapi (MIT's library) the initiator."""

import os
import subprocess

from krb5test import KLIST, REALM


def test_realm_issues_tickets_without_touching_the_host(krb5_realm):
    before = os.stat("/etc/krb5.conf").st_mtime if os.path.exists("/etc/krb5.conf") else None
    env = krb5_realm.kinit("alice")
    out = krb5_realm.klist(env)
    assert f"alice@{REALM}" in out
    assert f"krbtgt/{REALM}@{REALM}" in out
    assert env["KRB5CCNAME"].startswith(f"FILE:{krb5_realm.dir}")
    # A wrong password is refused by the KDC itself.
    bad = krb5_realm.run(["/usr/bin/kinit", f"bob@{REALM}"], input="wrong\n",
                         env=krb5_realm.env(ccache="bob-bad"), check=False)
    assert bad.returncode != 0
    # The service key is in the keytab, nowhere else.
    kt = subprocess.run([KLIST, "-k", str(krb5_realm.keytab)], capture_output=True, text=True,
                        env=krb5_realm.env())
    assert f"rcmd/localhost@{REALM}" in kt.stdout
    after = os.stat("/etc/krb5.conf").st_mtime if os.path.exists("/etc/krb5.conf") else None
    assert before == after


# --------------------------------------------------------------------------------------------
# The gateway as acceptor
# --------------------------------------------------------------------------------------------

import hashlib
import socket
import struct
import threading
import time

import pytest

from gss_client import (LEVEL_CONF, LEVEL_INTEG, LEVEL_PER_MESSAGE, MTYP_CONTEXT, MTYP_DATA,
                        Aborted, GssSocksClient, frame, initiator_context, read_frame)
from sgtest import (IO_TIMEOUT, default_config, default_policy, recv_exact, request,
                    wait_closed)


def gss_config(realm, protection="confidentiality", **gss) -> dict:
    cfg = default_config()
    cfg["listeners"] = [
        {"name": "main", "address": "127.0.0.1", "port": 0, "methods": ["gssapi"]},
        {"name": "up", "address": "127.0.0.1", "port": 0, "methods": ["userpass"]},
    ]
    g = {"keytab": str(realm.keytab), "principal": "rcmd/localhost", "realms": [realm.realm],
         "protection": protection}
    g.update(gss)
    cfg["auth"]["gssapi"] = g
    return cfg


@pytest.fixture
def krb_env(krb5_realm, monkeypatch):
    """This process's GSS library uses the test realm; alice has a ticket."""
    monkeypatch.setenv("KRB5_CONFIG", str(krb5_realm.krb5_conf))
    monkeypatch.delenv("KRB5CCNAME", raising=False)
    krb5_realm.kinit("alice")
    return krb5_realm


@pytest.fixture
def gss_gateway(gateway_factory, krb_env):
    def make(protection="confidentiality", name="gw", env=None, **gss):
        return gateway_factory(name=name, config=gss_config(krb_env, protection, **gss),
                               env=env or krb_env.env())
    return make


def alice(gw, realm, **kw) -> GssSocksClient:
    return GssSocksClient(gw.addr("main"), realm.ccache_path("alice"), **kw)


def abort_then_closed(sock) -> None:
    """The server's answer is exactly the RFC abort 01 FF, then the connection ends."""
    how, got = wait_closed(sock)
    assert got == b"\x01\xff", got


@pytest.mark.parametrize("level", [LEVEL_INTEG, LEVEL_CONF])
def test_connect_echo(gss_gateway, krb_env, echo_server, level):
    gw = gss_gateway("integrity" if level == LEVEL_INTEG else "confidentiality")
    c = alice(gw, krb_env)
    try:
        assert c.connect(request("127.0.0.1", echo_server.port), level) == 0
        payload = os.urandom(200000)
        c.send(payload)
        assert c.recv_plain(len(payload)) == payload
        c.sock.shutdown(socket.SHUT_WR)
        assert c.recv_until_eof() == b""
    finally:
        c.close()
    rec = gw.wait_session_end(method="gssapi")
    assert rec["user"] == "alice"
    assert rec["principal"] == f"alice@{REALM}"
    assert rec["protection"] == ("integrity" if level == LEVEL_INTEG else "confidentiality")
    assert rec["close_reason"] == "closed"
    assert rec["bytes_up"] == len(payload) and rec["bytes_down"] == len(payload)
