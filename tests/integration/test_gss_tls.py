"""GSS-API inside TLS: channel binding (RFC 5056; tls-server-end-point RFC 5929 under TLS 1.2,
tls-exporter RFC 9266 under TLS 1.3), the policy's per-rule `min_protection` and
`require_channel_binding`, and the agent's Kerberos sign-on end to end.

Real parts: a throwaway MIT realm (krb5test.Realm), python3-gssapi as an independent initiator
(over Python's ssl, TLS 1.2, whose tls-server-end-point data it can compute), the agent (our own
initiator, TLS 1.3 tls-exporter) with curl in front of it, the test PKI from make-certs.sh."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess

import pytest

from gss_client import (LEVEL_CONF, LEVEL_INTEG, MTYP_CONTEXT, Aborted, GssSocksClient,
                        read_frame)
from sgtest import IO_TIMEOUT, SOCKSGATE_BIN, default_config, request, wait_closed
from test_agent import (AgentProc, UdpEcho, agent_config, agent_policy, fetch_through,
                        local_socks, udp_datagram)
from tlstest import Pki, client_context, tls_listener

REALM = "KRBTEST.COM"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def krb_env(krb5_realm, monkeypatch):
    monkeypatch.setenv("KRB5_CONFIG", str(krb5_realm.krb5_conf))
    monkeypatch.delenv("KRB5CCNAME", raising=False)
    krb5_realm.kinit("alice")
    return krb5_realm


def gss_tls_config(realm, pki, require_binding: bool = False, tls_gss: dict | None = None,
                   **gss) -> dict:
    cfg = default_config()
    tls = tls_listener(pki, name="tls", methods=("gssapi",))
    tls["gssapi"] = dict(tls_gss or {})
    if require_binding:
        tls["gssapi"]["require_channel_binding"] = True
    cfg["listeners"] = [tls,
                        {"name": "plain", "address": "127.0.0.1", "port": 0,
                         "methods": ["gssapi"]}]
    g = {"keytab": str(realm.keytab), "principal": "rcmd/localhost", "realms": [realm.realm],
         "protection": "integrity"}
    g.update(gss)
    cfg["auth"]["gssapi"] = g
    return cfg


def guarded_policy(bound_port: int, conf_port: int) -> dict:
    """alice may reach `bound_port` only with a channel-bound context, `conf_port` only under
    confidentiality; everything else on loopback freely."""
    return {
        "client_rules": [{"id": "lo", "action": "pass", "from": ["127.0.0.0/8"]}],
        "rules": [
            {"id": "bound-only", "action": "pass", "users": ["alice"], "methods": ["gssapi"],
             "require_channel_binding": True, "to": ["127.0.0.0/8"], "ports": [str(bound_port)]},
            {"id": "conf-only", "action": "pass", "users": ["alice"],
             "min_protection": "confidentiality", "to": ["127.0.0.0/8"],
             "ports": [str(conf_port)]},
            {"id": "guarded", "action": "block", "ports": [str(bound_port), str(conf_port)]},
            {"id": "alice-local", "action": "pass", "users": ["alice"],
             "to": ["127.0.0.0/8"]},
        ],
    }


@pytest.fixture
def gw_factory(gateway_factory, krb_env, pki):
    def make(policy=None, **kw):
        return gateway_factory(config=gss_tls_config(krb_env, pki, **kw), policy=policy,
                               env=krb_env.env())
    return make


def client(gw, realm, pki, bindings="tls", listener="tls") -> GssSocksClient:
    ctx = None
    if listener == "tls":
        ctx = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
    return GssSocksClient(gw.addr(listener), realm.ccache_path("alice"), tls_ctx=ctx,
                          bindings=bindings)


def echo_once(c: GssSocksClient, payload: bytes = b"bound") -> None:
    c.send(payload)
    assert c.recv_plain(len(payload)) == payload


# --- channel binding at the acceptor -------------------------------------------------------

@pytest.mark.parametrize("level", [LEVEL_INTEG, LEVEL_CONF])
def test_bound_context_over_tls12(gw_factory, krb_env, pki, echo_server, level):
    gw = gw_factory(protection="integrity" if level == LEVEL_INTEG else "confidentiality")
    c = client(gw, krb_env, pki)
    try:
        assert c.connect(request("127.0.0.1", echo_server.port), level) == 0
        echo_once(c)
    finally:
        c.close()
    rec = gw.wait_session_end(method="gssapi")
    assert rec["channel_bound"] is True
    assert rec["tls_version"] == "TLSv1.2"
    assert rec["principal"] == f"alice@{REALM}" and rec["user"] == "alice"
    start = gw.wait_audit(lambda r: r.get("event") == "session_start")[0]
    assert start["channel_bound"] is True


def test_no_bindings_is_not_bound_and_plain_tcp_never_is(gw_factory, krb_env, pki,
                                                         echo_server):
    gw = gw_factory()
    for listener, bindings in (("tls", None), ("plain", None)):
        c = client(gw, krb_env, pki, bindings=bindings, listener=listener)
        try:
            assert c.connect(request("127.0.0.1", echo_server.port), LEVEL_INTEG) == 0
            echo_once(c)
        finally:
            c.close()
    recs = gw.wait_audit(lambda r: r.get("event") == "session_end", count=2)
    assert [r["channel_bound"] for r in recs] == [False, False]
    assert {r["listener"] for r in recs} == {"tls", "plain"}


def test_listener_requiring_binding_refuses_unbound_context(gw_factory, krb_env, pki,
                                                            echo_server):
    gw = gw_factory(require_binding=True)
    c = client(gw, krb_env, pki, bindings=None)
    try:
        c.greet()
        c.establish()  # the gateway's AP-REP completes the context...
        with pytest.raises(Aborted):
            read_frame(c.sock)  # ...then 01 FF, before any level exchange
    finally:
        c.close()
    rec = gw.wait_audit(lambda r: r.get("event") == "auth_failure")[0]
    assert rec["reason"] == "gss_channel_binding_required"
    assert rec["principal"] == f"alice@{REALM}"
    # The same listener serves a bound context.
    c = client(gw, krb_env, pki)
    try:
        assert c.connect(request("127.0.0.1", echo_server.port), LEVEL_INTEG) == 0
        echo_once(c)
    finally:
        c.close()
    assert gw.wait_session_end(channel_bound=True)["user"] == "alice"


def test_bindings_of_another_channel_are_refused(gw_factory, krb_env, pki):
    """What a TLS-terminating middlebox would forward: a context bound to its own TLS
    connection, not to ours."""
    gw = gw_factory()
    c = client(gw, krb_env, pki, bindings=b"tls-server-end-point:" + bytes(32))
    try:
        c.greet()
        token = c.ctx.step()
        c.sock.sendall(bytes([1, MTYP_CONTEXT]) + len(token).to_bytes(2, "big") + token)
        with pytest.raises(Aborted):
            for _ in range(2):
                mtyp, _ = read_frame(c.sock)
                assert mtyp == MTYP_CONTEXT
    finally:
        c.close()
    rec = gw.wait_audit(lambda r: r.get("event") == "auth_failure")[0]
    assert rec["reason"] == "gss_channel_binding_mismatch"
    assert "binding" in rec["detail"].lower()


# --- per-rule requirements ------------------------------------------------------------------

@pytest.fixture
def two_targets(echo_server):
    """A second echo service on another port (the policy guards the two differently)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    import threading

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def pump(conn=conn):
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)
            threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    yield echo_server.port, srv.getsockname()[1]
    srv.close()


def test_rule_requiring_channel_binding(gw_factory, krb_env, pki, two_targets):
    bound_port, conf_port = two_targets
    gw = gw_factory(policy=guarded_policy(bound_port, conf_port))
    # Bound: the guarded port is reachable.
    c = client(gw, krb_env, pki)
    try:
        assert c.connect(request("127.0.0.1", bound_port), LEVEL_INTEG) == 0
        echo_once(c)
    finally:
        c.close()
    assert gw.wait_session_end(rule="bound-only")["channel_bound"] is True
    # Not bound (no bindings over TLS, or plain TCP): refused with REP 02 by the block rule.
    for listener in ("tls", "plain"):
        c = client(gw, krb_env, pki, bindings=None, listener=listener)
        try:
            assert c.connect(request("127.0.0.1", bound_port), LEVEL_INTEG) == 2
        finally:
            c.close()
    denied = gw.wait_audit(lambda r: r.get("event") == "denied", count=2)
    assert {r["rule"] for r in denied} == {"guarded"}


def test_rule_requiring_confidentiality(gw_factory, krb_env, pki, two_targets):
    bound_port, conf_port = two_targets
    gw = gw_factory(policy=guarded_policy(bound_port, conf_port), protection="integrity")
    for level, rep in ((LEVEL_INTEG, 2), (LEVEL_CONF, 0)):
        c = client(gw, krb_env, pki, listener="plain")
        try:
            assert c.connect(request("127.0.0.1", conf_port), level) == rep
            if rep == 0:
                assert c.level == LEVEL_CONF
                echo_once(c)
        finally:
            c.close()
    rec = gw.wait_session_end(rule="conf-only")
    assert rec["protection"] == "confidentiality"
    denied = gw.wait_audit(lambda r: r.get("event") == "denied")[0]
    assert denied["rule"] == "guarded" and denied["protection"] == "integrity"


def test_policy_raises_the_granted_level(gw_factory, krb_env, pki, echo_server):
    """The listener requires integrity only, but every rule for alice needs confidentiality:
    her request for integrity is answered with confidentiality (RFC 1961 lets the server
    choose), instead of a session that no rule would then let through."""
    policy = {"rules": [{"id": "alice-conf", "action": "pass", "users": ["alice"],
                         "min_protection": "confidentiality", "to": ["127.0.0.0/8"]}]}
    gw = gw_factory(policy=policy, protection="integrity")
    c = client(gw, krb_env, pki, listener="plain")
    try:
        assert c.connect(request("127.0.0.1", echo_server.port), LEVEL_INTEG) == 0
        assert c.level == LEVEL_CONF
        echo_once(c)
    finally:
        c.close()
    rec = gw.wait_session_end(rule="alice-conf")
    assert rec["protection"] == "confidentiality"


def test_explain_and_validate_know_the_new_keys(gw_factory, krb_env, pki, tmp_path):
    gw = gw_factory(policy=guarded_policy(7001, 7002))
    base = [str(SOCKSGATE_BIN), "explain", "--config", str(gw.config_path), "--user", "alice",
            "--from", "127.0.0.1", "--listener", "tls", "--method", "gssapi"]
    run = lambda *a: subprocess.run(base + list(a), capture_output=True, text=True,
                                    env=krb_env.env(), timeout=60)
    r = run("--to", "127.0.0.1:7001")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "require_channel_binding: the GSS-API context is not bound" in r.stdout
    r = run("--to", "127.0.0.1:7001", "--channel-bound")
    assert r.returncode == 0 and "bound-only" in r.stdout, r.stdout + r.stderr
    r = run("--to", "127.0.0.1:7002", "--protection", "integrity")
    assert r.returncode == 3
    assert 'min_protection: the session has "integrity", the rule needs "confidentiality"' \
        in r.stdout, r.stdout
    r = run("--to", "127.0.0.1:7002")  # gssapi defaults to confidentiality
    assert r.returncode == 0 and "conf-only" in r.stdout, r.stdout + r.stderr

    # validate: a requirement no session of the rule's methods can meet; a bad value; the
    # listener flag on a plain listener.
    pol = guarded_policy(7001, 7002)
    pol["rules"][1]["methods"] = ["userpass"]
    pol["rules"][0]["require_channel_binding"] = "yes"
    (tmp_path / "policy.json").write_text(json.dumps(pol))
    (tmp_path / "users.passwd").write_text("")

    def validate(cfg) -> str:
        (tmp_path / "gw.json").write_text(json.dumps(cfg))
        r = subprocess.run([str(SOCKSGATE_BIN), "validate", "--config",
                            str(tmp_path / "gw.json")],
                           capture_output=True, text=True, env=krb_env.env(), timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr
        return r.stderr + r.stdout

    cfg = gss_tls_config(krb_env, pki)
    cfg["policy"] = {"file": str(tmp_path / "policy.json")}
    err = validate(cfg)
    assert "policy.json" in err
    assert "\"require_channel_binding\" must be true or false" in err
    assert "\"min_protection\" applies to GSS-API sessions only" in err
    cfg["listeners"][1]["gssapi"] = {"require_channel_binding": True}
    assert "\"require_channel_binding\" needs a TLS listener" in validate(cfg)


# --- the agent's Kerberos sign-on -------------------------------------------------------------

def gss_agent(tmp_path, gw, pki, realm, name="agent", **auth) -> AgentProc:
    a = AgentProc(tmp_path / name)
    au = {"method": "gssapi", "service": "rcmd@localhost",
          "ccache": str(realm.ccache_path("alice"))}
    au.update(auth)
    a.write(agent_config(gw.port("tls"), pki, a.dir, auth=au))
    env = realm.env()
    env.pop("KRB5CCNAME", None)
    a.start(env=env)
    return a


def test_agent_kerberos_sign_on_channel_bound(gw_factory, krb_env, pki, http_server, tmp_path):
    gw = gw_factory(require_binding=True, protection="confidentiality")
    agent = gss_agent(tmp_path, gw, pki, krb_env)
    try:
        host, port = agent.addr()
        fetch_through(["--socks5-hostname", f"{host}:{port}"], http_server.url("localhost"),
                      http_server, tmp_path / "file.bin", agent.log())
        rec = gw.wait_session_end(method="gssapi")
        assert rec["principal"] == f"alice@{REALM}" and rec["user"] == "alice"
        assert rec["channel_bound"] is True
        assert rec["protection"] == "confidentiality"
        assert rec["tls_version"] == "TLSv1.3"  # tls-exporter bindings
        assert rec["bytes_down"] > len(http_server.body)
    finally:
        assert not agent.teardown()


def test_agent_integrity_and_udp(gw_factory, krb_env, pki, echo_server, tmp_path):
    """Integrity only, and UDP: the datagrams travel as frames inside the agent's GSS-API
    protected link (UDP inside TLS, docs/udp-over-tls.md), each checked on the way."""
    gw = gw_factory(protection="integrity", policy=agent_policy())
    agent = gss_agent(tmp_path, gw, pki, krb_env, protection="integrity")
    echo = UdpEcho()
    try:
        s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
        try:
            assert rep == 0
            s.sendall(b"x" * 100000)
            got = b""
            while len(got) < 100000:
                got += s.recv(65536)
            assert got == b"x" * 100000
        finally:
            s.close()
        rec = gw.wait_session_end(command="connect")
        assert rec["protection"] == "integrity" and rec["channel_bound"] is True

        ctl, (rep, raddr, rport) = local_socks(agent, "0.0.0.0", 0, cmd=3)
        with ctl:
            assert rep == 0, agent.log()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(IO_TIMEOUT)
                for size in (1, 1000, 30000):
                    payload = os.urandom(size)
                    u.sendto(udp_datagram("127.0.0.1", echo.port, payload), (raddr, rport))
                    data, _ = u.recvfrom(65535)
                    assert data.endswith(payload) and len(data) == size + 10
        rec = gw.wait_session_end(command="udp")
        assert rec["method"] == "gssapi" and rec["udp_in_stream"] is True
        assert rec["bytes_up"] >= 31001
    finally:
        echo.close()
        assert not agent.teardown()


def test_agent_kerberos_with_tls_protection_only(gw_factory, krb_env, pki, echo_server,
                                                 tmp_path):
    """protection "none" on a TLS listener: Kerberos says who, TLS protects the data (the fast
    path); the sign-on is still bound to the TLS connection. An agent that requires
    integrity refuses what such a listener grants."""
    gw = gw_factory(require_binding=True, tls_gss={"protection": "none"})
    agent = gss_agent(tmp_path, gw, pki, krb_env, protection="none")
    strict = gss_agent(tmp_path, gw, pki, krb_env, name="strict", protection="integrity")
    try:
        s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
        with s:
            assert rep == 0
            s.sendall(b"fast path")
            assert s.recv(100) == b"fast path"
        rec = gw.wait_session_end(command="connect")
        assert rec["protection"] == "none" and rec["channel_bound"] is True
        s, (rep, _, _) = local_socks(strict, "127.0.0.1", echo_server.port)
        s.close()
        assert rep == 2
        assert "less than the integrity we require" in strict.wait_log("granted none")
    finally:
        assert not agent.teardown()
        strict.teardown()


def test_agent_without_bindings_is_refused_when_required(gw_factory, krb_env, pki,
                                                         http_server, tmp_path):
    gw = gw_factory(require_binding=True)
    agent = gss_agent(tmp_path, gw, pki, krb_env, channel_binding=False)
    try:
        host, port = agent.addr()
        res = subprocess.run(["curl", "-sS", "--max-time", "30", "--socks5-hostname",
                              f"{host}:{port}", http_server.url("localhost")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0
        rec = gw.wait_audit(lambda r: r.get("event") == "auth_failure")[0]
        assert rec["reason"] == "gss_channel_binding_required"
        line = agent.wait_log("refused")
        assert "check auth in the agent's config" in line, agent.log()
    finally:
        agent.teardown()


def test_agent_without_ticket_fails_clearly(gw_factory, krb_env, pki, echo_server, tmp_path):
    gw = gw_factory()
    agent = gss_agent(tmp_path, gw, pki, krb_env, ccache=str(tmp_path / "no-such-ccache"))
    try:
        s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
        s.close()
        assert rep == 2  # credentials: not allowed, not retried
        line = agent.wait_log("Kerberos sign-on")
        assert "rcmd@localhost" in line, agent.log()
    finally:
        agent.teardown()


def test_agent_config_errors(pki, tmp_path):
    a = AgentProc(tmp_path / "bad")
    cfg = agent_config(1, pki, a.dir, auth={"method": "gssapi", "user": "alice",
                                            "protection": "secret"})
    a.write(cfg)
    r = subprocess.run([str(SOCKSGATE_BIN), "agent", "--config", str(a.dir / "agent.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "method \"gssapi\" takes no \"user\"" in r.stderr, r.stderr
    assert "\"protection\" must be" in r.stderr, r.stderr
    cfg = agent_config(1, pki, a.dir, auth={"method": "userpass", "user": "alice",
                                            "password_env": "X", "service": "rcmd@x"})
    a.write(cfg)
    r = subprocess.run([str(SOCKSGATE_BIN), "agent", "--config", str(a.dir / "agent.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "apply to method \"gssapi\" only" in r.stderr, r.stderr
