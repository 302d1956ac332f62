"""The admin listener: Prometheus metrics checked against the audit log, live sessions, closing
a user's sessions, the bearer token, health and readiness, the admin subcommands."""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from sgtest import (IO_TIMEOUT, SOCKSGATE_BIN, SocksError, connect_tcp, default_config,
                    default_policy, echo_roundtrip, greeting, local_port, recv_exact,
                    socks_connect, wait_closed)


def admin_config(**admin) -> dict:
    cfg = default_config(max_sessions_per_user=3)
    a = {"address": "127.0.0.1", "port": 0, "metrics_users": ["alice"]}
    a.update(admin)
    cfg["admin"] = a
    return cfg


def policy_with_bob() -> dict:
    p = default_policy()
    p["rules"].insert(1, {"id": "bob-local", "action": "pass", "users": ["bob"],
                          "commands": ["connect"], "to": ["127.0.0.0/8"],
                          "ports": ["1024-65535"]})
    return p


def admin_addr(gw) -> str:
    a = gw.ready["admin"]
    assert a["address"] == "127.0.0.1"
    return f"{a['address']}:{a['port']}"


def http(gw, method: str, path: str, headers: dict | None = None,
         raw: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request on its own connection; returns (status, headers, body)."""
    a = gw.ready["admin"]
    s = connect_tcp((a["address"], a["port"]))
    try:
        if raw is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {a['address']}:{a['port']}"]
            for k, v in (headers or {}).items():
                lines.append(f"{k}: {v}")
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *hlines = head.decode().split("\r\n")
    status = int(status_line.split(" ")[1])
    hdrs = {}
    for l in hlines:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    assert int(hdrs["content-length"]) == len(body)
    return status, hdrs, body


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict:
    """{name: {frozenset(labels.items()): value}}; asserts every line is well-formed."""
    out = collections.defaultdict(dict)
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = {}
        if m.group(2):
            for lm in LABEL.finditer(m.group(2)):
                labels[lm.group(1)] = lm.group(2)
        out[m.group(1)][frozenset(labels.items())] = float(m.group(3))
    return out


def scrape(gw, token: str | None = None) -> dict:
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    status, h, body = http(gw, "GET", "/metrics", hdrs)
    assert status == 200, body
    assert h["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(body.decode())


def series(m: dict, name: str, **labels) -> float:
    return m.get(name, {}).get(frozenset(labels.items()), 0.0)


def by(m: dict, name: str, *keys) -> dict:
    """Non-zero series of `name` summed by the given label names."""
    out = collections.Counter()
    for ls, v in m.get(name, {}).items():
        d = dict(ls)
        if v:
            out[tuple(d.get(k, "") for k in keys)] += v
    return dict(out)


def run_bin(*args, timeout=30):
    return subprocess.run([SOCKSGATE_BIN, *args], capture_output=True, text=True, timeout=timeout)


# --- metrics against the audit log -------------------------------------------------------------

def test_metrics_match_audit_counts(gateway_factory, echo_server):
    gw = gateway_factory(config=admin_config(), policy=policy_with_bob())
    addr = gw.addr("main")
    pw = gw.passwords
    # Successful CONNECTs (alice and bob), with data both ways.
    for user in ("alice", "alice", "bob"):
        s, _ = socks_connect(addr, user, pw[user], "127.0.0.1", echo_server.port)
        payload = os.urandom(5000 + len(user))
        assert echo_roundtrip(s, payload) == payload
        s.close()
    # CONNECT over IPv6 with method "none" (anonymous: no rule passes it).
    with pytest.raises(SocksError) as e:
        socks_connect(gw.addr("main6"), None, None, "::1", echo_server.port)
    assert e.value.data == 2
    # Policy denial: a port below 1024.
    with pytest.raises(SocksError) as e:
        socks_connect(addr, "alice", pw["alice"], "127.0.0.1", 80)
    assert e.value.data == 2
    # Authentication failures: a wrong password, an unknown user, no acceptable method.
    for user, password in (("alice", "wrong"), ("mallory", "x")):
        with pytest.raises(SocksError) as e:
            socks_connect(addr, user, password, "127.0.0.1", echo_server.port)
        assert e.value.stage == "auth"
    s = connect_tcp(addr)
    s.sendall(greeting((0x00,)))
    assert recv_exact(s, 2) == b"\x05\xff"
    s.close()
    # A limit: alice holds 3 sessions (her cap), the 4th is refused.
    held = [socks_connect(addr, "alice", pw["alice"], "127.0.0.1", echo_server.port)[0]
            for _ in range(3)]
    with pytest.raises(SocksError) as e:
        socks_connect(addr, "alice", pw["alice"], "127.0.0.1", echo_server.port)
    assert e.value.data == 2

    # While they are held: the active gauges see them.
    m = scrape(gw)
    assert series(m, "socksgate_sessions_active", listener="main", method="userpass",
                  command="connect") == 3
    assert series(m, "socksgate_user_sessions_active", user="alice") == 3
    for s in held:
        s.close()

    connections = 3 + 1 + 1 + 3 + 3 + 1
    gw.wait_audit(lambda r: r.get("event") == "session_end", connections)
    time.sleep(0.2)  # a scrape must not race the last session's counters
    m = scrape(gw)
    audit = gw.audit()
    ends = [r for r in audit if r["event"] == "session_end"]
    assert len(ends) == connections

    # One series per (listener, method, command) of the session_end records.
    want = collections.Counter((r["listener"], r.get("method", "unknown"),
                                r.get("command", "unknown")) for r in ends)
    assert by(m, "socksgate_sessions_total", "listener", "method", "command") == dict(want)
    assert by(m, "socksgate_connections_total", "listener") == dict(
        collections.Counter((r["listener"],) for r in ends))
    assert by(m, "socksgate_sessions_closed_total", "reason") == dict(
        collections.Counter((r["close_reason"],) for r in ends))
    assert by(m, "socksgate_policy_decisions_total", "rule", "decision") == dict(
        collections.Counter((r["rule"], r["decision"]) for r in ends if "rule" in r))
    fails = [r for r in audit if r["event"] == "auth_failure"]
    assert len(fails) == 3
    assert by(m, "socksgate_auth_failures_total", "method", "reason") == dict(
        collections.Counter((r.get("method", "unknown"), r["reason"]) for r in fails))
    limits = [r for r in audit if r["event"] == "denied" and r.get("stage") == "limit"]
    assert [r["reason"] for r in limits] == ["limit:sessions_per_user"]
    assert by(m, "socksgate_limit_hits_total", "limit") == {("sessions_per_user",): 1}
    assert series(m, "socksgate_limit_hits_total", limit="sessions_total") == 0  # pre-created
    for direction in ("up", "down"):
        assert series(m, "socksgate_bytes_total", listener="main", direction=direction) == \
            sum(r[f"bytes_{direction}"] for r in ends if r["listener"] == "main")
        assert series(m, "socksgate_user_bytes_total", user="alice", direction=direction) == \
            sum(r[f"bytes_{direction}"] for r in ends if r.get("user") == "alice")
    assert series(m, "socksgate_bytes_total", listener="main", direction="up") > 10000
    # Authenticated: a method was selected and authentication did not fail.
    passed = [r for r in ends if r["close_reason"] != "auth_failed" and "method" in r]
    assert by(m, "socksgate_auth_successes_total", "method") == dict(
        collections.Counter((r["method"],) for r in passed))
    # Per-user series: alice only (listed in admin.metrics_users); nobody else's name appears.
    assert series(m, "socksgate_user_sessions_total", user="alice") == \
        len([r for r in passed if r.get("user") == "alice"])
    assert series(m, "socksgate_user_auth_failures_total", user="alice") == 1
    assert series(m, "socksgate_user_limit_hits_total", user="alice",
                  limit="sessions_per_user") == 1
    assert series(m, "socksgate_user_sessions_active", user="alice") == 0
    text = http(gw, "GET", "/metrics")[2].decode()
    assert 'user="bob"' not in text and "mallory" not in text
    # Every record went through the audit writer, each write timed.
    assert series(m, "socksgate_audit_write_seconds_count") == len(gw.audit_lines())
    assert series(m, "socksgate_audit_write_failures_total") == 0
    assert series(m, "socksgate_draining") == 0


def test_reload_counters_and_rule_series(gateway_factory):
    gw = gateway_factory(config=admin_config())
    m = scrape(gw)
    assert series(m, "socksgate_reloads_total") == 0
    assert series(m, "socksgate_reload_failures_total") == 0
    good = gw.config_path.read_text()
    gw.config_path.write_text("{ not json")
    ok, _ = gw.reload()
    assert not ok
    gw.config_path.write_text(good)
    ok, _ = gw.reload()
    assert ok
    m = scrape(gw)
    assert series(m, "socksgate_reloads_total") == 1
    assert series(m, "socksgate_reload_failures_total") == 1


# --- live sessions and closing a user's sessions -----------------------------------------------

def test_sessions_show_live_growing_bytes(gateway_factory, echo_server):
    gw = gateway_factory(config=admin_config())
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    port = local_port(s)
    try:
        def mine():
            status, h, body = http(gw, "GET", "/sessions")
            assert status == 200 and h["content-type"] == "application/json"
            rows = [r for r in json.loads(body)["sessions"]
                    if r["client"] == f"127.0.0.1:{port}"]
            assert len(rows) == 1, body
            return rows[0]

        def mine_with(up, down):
            # The relay counts a chunk once its write returns, which can be just after the client
            # has read it: poll briefly rather than read once.
            deadline = time.monotonic() + 5
            while True:
                row = mine()
                if (row["bytes_up"], row["bytes_down"]) == (up, down) or \
                        time.monotonic() > deadline:
                    return row
                time.sleep(0.01)

        first = mine()
        assert first["user"] == "alice"
        assert first["listener"] == "main"
        assert first["method"] == "userpass"
        assert first["command"] == "connect"
        assert first["target"] == f"127.0.0.1:{echo_server.port}"
        assert first["bytes_up"] == 0 and first["bytes_down"] == 0
        assert re.fullmatch(r"[0-9a-f]{16}", first["id"])
        assert echo_roundtrip(s, b"x" * 3000) == b"x" * 3000
        second = mine_with(3000, 3000)
        assert (second["bytes_up"], second["bytes_down"]) == (3000, 3000)
        time.sleep(0.3)
        assert echo_roundtrip(s, b"y" * 7000) == b"y" * 7000
        third = mine_with(10000, 10000)
        assert (third["bytes_up"], third["bytes_down"]) == (10000, 10000)
        assert third["age_s"] > second["age_s"] >= first["age_s"] >= 0
        assert third["id"] == first["id"]

        # The subcommand prints the same session.
        r = run_bin("sessions", "--admin", admin_addr(gw))
        assert r.returncode == 0, r.stderr
        assert "alice" in r.stdout and f"127.0.0.1:{echo_server.port}" in r.stdout
        assert first["id"] in r.stdout
        r = run_bin("sessions", "--admin", admin_addr(gw), "--json")
        assert r.returncode == 0, r.stderr
        assert any(x["id"] == first["id"] for x in json.loads(r.stdout)["sessions"])
    finally:
        s.close()
    end = gw.wait_session_end_for(port)
    assert end["session"] == first["id"]
    # Gone from the list once ended.
    status, _, body = http(gw, "GET", "/sessions")
    assert first["id"] not in body.decode()


def test_close_user_closes_exactly_that_users_sessions(gateway_factory, echo_server):
    gw = gateway_factory(config=admin_config(), policy=policy_with_bob())
    addr, pw = gw.addr("main"), gw.passwords
    alice = [socks_connect(addr, "alice", pw["alice"], "127.0.0.1", echo_server.port)[0]
             for _ in range(2)]
    bob, _ = socks_connect(addr, "bob", pw["bob"], "127.0.0.1", echo_server.port)
    alice_ports, bob_port = [local_port(s) for s in alice], local_port(bob)
    try:
        status, _, body = http(gw, "POST", "/sessions/close?user=alice")
        assert status == 200, body
        assert json.loads(body) == {"user": "alice", "closed": 2}
        for s in alice:
            wait_closed(s)
        for p in alice_ports:
            end = gw.wait_session_end_for(p)
            assert end["close_reason"] == "admin_closed"
            assert end["user"] == "alice"
        # bob's session is untouched and still relays.
        assert echo_roundtrip(bob, b"still here") == b"still here"
        assert not [r for r in gw.session_ends() if r.get("user") == "bob"]
        # The subcommand: nobody left to close for alice; bob's one session closes.
        r = run_bin("close-user", "--admin", admin_addr(gw), "--user", "alice")
        assert r.returncode == 0, r.stderr
        assert "closed 0 sessions of alice" in r.stdout
        r = run_bin("close-user", "--admin", admin_addr(gw), "--user", "bob")
        assert r.returncode == 0, r.stderr
        assert "closed 1 sessions of bob" in r.stdout
        wait_closed(bob)
        assert gw.wait_session_end_for(bob_port)["close_reason"] == "admin_closed"
    finally:
        for s in alice + [bob]:
            s.close()
    m = scrape(gw)
    assert series(m, "socksgate_sessions_closed_total", reason="admin_closed") == 3
    # A user name that needs escaping in the query string, and bad queries.
    status, _, body = http(gw, "POST", "/sessions/close?user=al%22ice%20x")
    assert status == 200 and json.loads(body) == {"user": 'al"ice x', "closed": 0}
    assert http(gw, "POST", "/sessions/close")[0] == 400
    assert http(gw, "POST", "/sessions/close?user=a&user=b")[0] == 400
    assert http(gw, "POST", "/sessions/close?user=%zz")[0] == 400
    status, h, _ = http(gw, "GET", "/sessions/close?user=alice")
    assert status == 405 and h["allow"] == "POST"


# --- the token -----------------------------------------------------------------------------------

def test_token_required_when_configured(gateway_factory, tmp_path):
    token = "s3cr3t-" + os.urandom(16).hex()
    gw = gateway_factory(config=admin_config(token_file="admin.token"), start=False)
    tf = gw.dir / "admin.token"
    tf.write_text(token + "\n")
    tf.chmod(0o600)
    gw.start()
    for path in ("/metrics", "/sessions"):
        status, h, _ = http(gw, "GET", path)
        assert status == 401 and h["www-authenticate"].startswith("Bearer")
        for bad in (token[:-1] + "x", token + "x", "x", token.upper()):
            assert http(gw, "GET", path, {"Authorization": f"Bearer {bad}"})[0] == 401
        assert http(gw, "GET", path, {"Authorization": f"Basic {token}"})[0] == 401
        assert http(gw, "GET", path, {"Authorization": f"Bearer {token}"})[0] == 200
        assert http(gw, "GET", path, {"Authorization": f"bearer {token}"})[0] == 200
    assert http(gw, "POST", "/sessions/close?user=alice")[0] == 401
    # Health and readiness stay open for probes.
    assert http(gw, "GET", "/healthz")[0] == 200
    assert http(gw, "GET", "/readyz")[0] == 200
    # The subcommands: without the token they fail (exit 1), with it they work.
    r = run_bin("metrics", "--admin", admin_addr(gw))
    assert r.returncode == 1 and "401" in r.stderr, r.stderr
    r = run_bin("metrics", "--admin", admin_addr(gw), "--token-file", str(tf))
    assert r.returncode == 0, r.stderr
    assert "socksgate_sessions_total" in r.stdout or "socksgate_connections_total" in r.stdout
    # The token never reaches the log.
    assert token not in gw.log_text()


def write_config(tmp_path, admin: dict) -> str:
    cfg = default_config()
    cfg["admin"] = admin
    cfg["audit"] = {}
    p = tmp_path / "cfg.json"
    (tmp_path / "users.passwd").write_text("")
    p.write_text(json.dumps(cfg))
    return str(p)


def test_validation_refuses_non_loopback_without_token(tmp_path):
    r = run_bin("validate", "--config", write_config(tmp_path, {"address": "0.0.0.0"}))
    assert r.returncode == 2
    assert "not loopback" in r.stderr and "token_file" in r.stderr
    (tmp_path / "t").write_text("0123456789abcdef0123\n")
    r = run_bin("validate", "--config",
                write_config(tmp_path, {"address": "0.0.0.0", "token_file": "t"}))
    assert r.returncode == 0, r.stderr
    r = run_bin("validate", "--config", write_config(tmp_path, {"address": "::1"}))
    assert r.returncode == 0, r.stderr
    (tmp_path / "short").write_text("abc\n")
    r = run_bin("validate", "--config", write_config(tmp_path, {"token_file": "short"}))
    assert r.returncode == 2 and "at least 16" in r.stderr
    r = run_bin("validate", "--config", write_config(tmp_path, {"token_file": "missing"}))
    assert r.returncode == 2 and "missing" in r.stderr
    r = run_bin("validate", "--config", write_config(tmp_path, {"bogus": 1}))
    assert r.returncode == 2 and "unknown key \"bogus\"" in r.stderr
    r = run_bin("validate", "--config", write_config(tmp_path, {"address": "localhost"}))
    assert r.returncode == 2 and "IP address" in r.stderr
    r = run_bin("validate", "--config",
                write_config(tmp_path, {"metrics_users": ["alice", "alice"]}))
    assert r.returncode == 2 and "twice" in r.stderr


# --- health, readiness, drain ---------------------------------------------------------------------

def test_health_and_readiness_during_drain(gateway_factory, echo_server):
    gw = gateway_factory(config=admin_config())
    assert http(gw, "GET", "/healthz")[:3:2] == (200, b"ok\n")
    assert http(gw, "GET", "/readyz")[:3:2] == (200, b"ready\n")
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    try:
        gw.send_sigterm()
        deadline = time.monotonic() + IO_TIMEOUT
        while http(gw, "GET", "/readyz")[0] != 503:
            assert time.monotonic() < deadline, "readyz still 200 while draining"
            time.sleep(0.05)
        assert http(gw, "GET", "/readyz")[2] == b"draining\n"
        assert http(gw, "GET", "/healthz")[0] == 200
        assert series(scrape(gw), "socksgate_draining") == 1
        assert echo_roundtrip(s, b"during drain") == b"during drain"
    finally:
        s.close()
    assert gw.proc.wait(timeout=15) == 0


# --- the protocol ---------------------------------------------------------------------------------

def test_strict_http(gateway_factory):
    gw = gateway_factory(config=admin_config())
    assert http(gw, "GET", "/nope")[0] == 404
    status, h, _ = http(gw, "POST", "/metrics")
    assert status == 405 and "GET" in h["allow"]
    assert http(gw, None, None, raw=b"GET /metrics HTTP/1.1\r\n\r\n")[0] == 400  # no Host
    assert http(gw, None, None, raw=b"GET /metrics HTTP/1.1\nHost: x\n\n")[0] == 400
    assert http(gw, None, None, raw=b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n")[0] == 505
    assert http(gw, None, None,
                raw=b"POST /sessions/close?user=a HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0] == 501
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 10000 + b"\r\n\r\n"
    assert http(gw, None, None, raw=big)[0] == 431
    status, _, body = http(gw, None, None, raw=b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (status, body) == (200, b"ok\n")
    # A client that sends half a request and stalls is cut off; the listener keeps serving.
    stalled = connect_tcp(("127.0.0.1", gw.ready["admin"]["port"]))
    stalled.sendall(b"GET /metrics HTTP/1.1\r\n")
    assert http(gw, "GET", "/healthz")[0] == 200
    stalled.settimeout(15)
    data = b""
    while True:
        chunk = stalled.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")
    stalled.close()


# --- the subcommands ------------------------------------------------------------------------------

def test_subcommand_usage_and_failures(gateway_factory):
    for cmd in ("sessions", "close-user", "metrics"):
        r = run_bin(cmd, "--help")
        assert r.returncode == 0 and "--admin" in r.stdout
        r = run_bin(cmd)
        assert r.returncode == 2 and "--admin" in r.stderr
        r = run_bin(cmd, "--admin", "127.0.0.1:1", "--bogus")
        assert r.returncode == 2
    r = run_bin("close-user", "--admin", "127.0.0.1:1")
    assert r.returncode == 2 and "--user" in r.stderr
    r = run_bin("metrics", "--admin", "not-an-address")
    assert r.returncode == 2
    # Nothing listens there: a failure, not a usage error.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run_bin("metrics", "--admin", f"127.0.0.1:{port}")
    assert r.returncode == 1 and "cannot connect" in r.stderr
    gw = gateway_factory(config=admin_config())
    r = run_bin("metrics", "--admin", admin_addr(gw))
    assert r.returncode == 0 and "# TYPE socksgate_sessions_total counter" in r.stdout
    r = run_bin("metrics", "--admin", admin_addr(gw), "--token-file", "/nonexistent")
    assert r.returncode == 1 and "/nonexistent" in r.stderr


def test_no_admin_section_means_no_admin_listener(gateway_factory):
    gw = gateway_factory()
    assert "admin" not in gw.ready
