"""Operating socksgate: validate, explain, hash-password, SIGHUP reload, SIGTERM drain, and the
audit log checked field by field."""

import json
import os
import re
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sgtest import (SOCKSGATE_BIN, SocksError, Target, assert_audit_schema, connect_refused,
                    connect_tcp, default_config, default_policy, echo_roundtrip, greeting, local_port,
                    make_hash, read_reply, recv_all, recv_exact, request, socks_connect,
                    unescape_untrusted, userpass, wait_closed)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


def run_bin(*args, input=None, timeout=30):
    return subprocess.run([SOCKSGATE_BIN, *args], input=input, capture_output=True, text=True,
                          timeout=timeout)


# --- validate ---------------------------------------------------------------------------------

def strip_json_comments(text: str) -> str:
    """Removes // and /* */ comments outside strings (the config dialect)."""
    out = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def example_configs():
    """Every gateway configuration under docs/examples/ (JSON files whose top level has
    "listeners"; policy files and the like are validated through the configs naming them)."""
    configs, unreadable = [], []
    for p in sorted(EXAMPLES.rglob("*.json")):
        try:
            doc = json.loads(strip_json_comments(p.read_text()))
        except ValueError as e:
            unreadable.append(f"{p}: {e}")
            continue
        if isinstance(doc, dict) and "listeners" in doc:
            configs.append(p)
    return configs, unreadable


def test_validate_every_example():
    configs, unreadable = example_configs()
    assert not unreadable, unreadable
    # No examples is a failure, not a skip: the docs promise tested examples.
    assert configs, f"no configuration examples in {EXAMPLES}"
    failures = []
    for p in configs:
        res = run_bin("validate", "--config", str(p))
        if res.returncode != 0 or res.stderr.strip():
            failures.append(f"{p.relative_to(REPO)}: exit {res.returncode}\n{res.stderr}")
        elif "ok" not in res.stdout:
            failures.append(f"{p.relative_to(REPO)}: no 'ok' in {res.stdout!r}")
    assert not failures, "\n".join(failures)


def test_minimal_example_runs(gateway_factory, http_server):
    """The minimal example really serves: copied with its files, port 0, audit redirected."""
    src = EXAMPLES / "minimal.json"
    assert src.exists(), "docs/examples/minimal.json is missing"
    gw = gateway_factory(start=False)
    cfg = json.loads(strip_json_comments(src.read_text()))
    for ref in (cfg["auth"]["userpass"]["file"], cfg["policy"]["file"]):
        dst = gw.dir / ref
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((EXAMPLES / ref).read_bytes())
    for l in cfg["listeners"]:
        l["port"] = 0
    cfg["audit"] = {"file": "audit.jsonl"}
    gw.config_path.write_text(json.dumps(cfg))
    gw.start()
    name = cfg["listeners"][0]["name"]
    # The documented password works; the example policy keeps alice off loopback.
    with pytest.raises(SocksError) as ei:
        socks_connect(gw.addr(name), "alice", "change-me-alice", "127.0.0.1", http_server.port)
    assert ei.value.stage == "reply" and ei.value.data == 2
    end = gw.wait_session_end(user="alice")
    assert end["close_reason"] == "policy_denied" and end["rule"] == "deny-rest"


def text_pos(path: Path, needle: str) -> tuple[int, int]:
    """1-based line and column of the first occurrence of needle."""
    t = path.read_text()
    i = t.index(needle)
    return t.count("\n", 0, i) + 1, i - (t.rfind("\n", 0, i) + 1) + 1


LISTENER = '{ "name": "main", "address": "127.0.0.1", "port": 0, "methods": ["userpass"] }'


@pytest.fixture
def vdir(tmp_path):
    (tmp_path / "users.passwd").write_text(f"alice:{make_hash('pw-alice', 'sha512')}\n")
    return tmp_path


def assert_diag(res, path: Path, needle: str, *words):
    line, col = text_pos(path, needle)
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    prefix = f"{path}:{line}:{col}: "
    hits = [l for l in lines if l.startswith(prefix)]
    assert hits, f"expected a line starting with {prefix!r}, got:\n{res.stderr}"
    for w in words:
        assert w in hits[0], (w, hits[0])


def test_validate_unknown_key(vdir):
    p = vdir / "socksgate.json"
    p.write_text(
        '// comments are allowed\n'
        '{\n'
        f'  "listeners": [ {LISTENER} ],\n'
        '  "auth": { "userpass": { "file": "users.passwd",\n'
        '                          "failure_dealy_ms": 100 } },\n'
        '  "policy": { "inline": { "rules": [] } }\n'
        '}\n')
    res = run_bin("validate", "--config", str(p))
    assert_diag(res, p, '"failure_dealy_ms"', "failure_dealy_ms", "failure_delay_ms")


def test_validate_unknown_top_level_key(vdir):
    p = vdir / "socksgate.json"
    p.write_text('{\n'
                 f'  "listeners": [ {LISTENER} ],\n'
                 '  "auth": { "userpass": { "file": "users.passwd" } },\n'
                 '  "policy": { "inline": { "rules": [] } },\n'
                 '    "audti": { "file": "a.jsonl" }\n'
                 '}\n')
    res = run_bin("validate", "--config", str(p))
    assert_diag(res, p, '"audti"', "audti")


def test_validate_bad_cidr_inline(vdir):
    p = vdir / "socksgate.json"
    p.write_text('{\n'
                 f'  "listeners": [ {LISTENER} ],\n'
                 '  "auth": { "userpass": { "file": "users.passwd" } },\n'
                 '  "policy": { "inline": {\n'
                 '    "rules": [\n'
                 '      { "id": "x", "action": "pass", "to": ["192.168.1.0/24", "10.0.0.0/33"] }\n'
                 '    ] } }\n'
                 '}\n')
    res = run_bin("validate", "--config", str(p))
    assert_diag(res, p, '"10.0.0.0/33"', "10.0.0.0/33")


def test_validate_bad_cidr_in_policy_file(vdir):
    pol = vdir / "policy.json"
    pol.write_text('{\n'
                   '  "client_rules": [\n'
                   '    { "id": "lo", "action": "pass",\n'
                   '      "from": ["127.0.0.0/8", "300.1.2.3/8"] }\n'
                   '  ],\n'
                   '  "rules": [ { "id": "deny-rest", "action": "block" } ]\n'
                   '}\n')
    p = vdir / "socksgate.json"
    p.write_text('{\n'
                 f'  "listeners": [ {LISTENER} ],\n'
                 '  "auth": { "userpass": { "file": "users.passwd" } },\n'
                 '  "policy": { "file": "policy.json" }\n'
                 '}\n')
    res = run_bin("validate", "--config", str(p))
    # The position is in the policy file, where the mistake is.
    assert_diag(res, pol, '"300.1.2.3/8"', "300.1.2.3/8")


def test_validate_missing_policy_file(vdir):
    p = vdir / "socksgate.json"
    p.write_text('{\n'
                 f'  "listeners": [ {LISTENER} ],\n'
                 '  "auth": { "userpass": { "file": "users.passwd" } },\n'
                 '  "policy": { "file": "no-such-policy.json" }\n'
                 '}\n')
    res = run_bin("validate", "--config", str(p))
    assert_diag(res, p, '"no-such-policy.json"', "no-such-policy.json")


def test_validate_missing_password_file(vdir):
    """Same contract for the other file a config names: exit 2, file:line:col at the value."""
    p = vdir / "socksgate.json"
    p.write_text('{\n'
                 f'  "listeners": [ {LISTENER} ],\n'
                 '  "auth": { "userpass": { "file": "no-such-users.passwd" } },\n'
                 '  "policy": { "inline": { "rules": [] } }\n'
                 '}\n')
    res = run_bin("validate", "--config", str(p))
    assert_diag(res, p, '"no-such-users.passwd"', "no-such-users.passwd")


def test_validate_reports_every_problem(vdir):
    p = vdir / "socksgate.json"
    p.write_text('{\n'
                 f'  "listeners": [ {LISTENER} ],\n'
                 '  "auth": { "userpass": { "file": "users.passwd", "bogus1": 1 } },\n'
                 '  "limits": { "bogus2": 1 },\n'
                 '  "policy": { "inline": { "rules": [] } }\n'
                 '}\n')
    res = run_bin("validate", "--config", str(p))
    assert res.returncode == 2
    for needle in ('"bogus1"', '"bogus2"'):
        line, col = text_pos(p, needle)
        assert f"{p}:{line}:{col}: " in res.stderr, res.stderr


def test_validate_ok_output(vdir):
    p = vdir / "socksgate.json"
    p.write_text(json.dumps({"listeners": [json.loads(LISTENER)],
                             "auth": {"userpass": {"file": "users.passwd"}},
                             "policy": {"inline": default_policy()}}))
    res = run_bin("validate", "--config", str(p))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "ok" in res.stdout


# --- explain ----------------------------------------------------------------------------------

@pytest.fixture
def explain_cfg(gateway_factory):
    return gateway_factory(start=False).config_path


@pytest.mark.parametrize("user,src,to,command,rc,rule", [
    ("alice", "127.0.0.1", "127.0.0.1:8080", None, 0, "alice-local"),
    ("alice", "::1", "[::1]:8080", "connect", 0, "alice-local"),
    ("alice", "127.0.0.1", "localhost:8080", None, 0, "alice-local"),
    ("alice", "127.0.0.1", "127.0.0.1:80", None, 3, "deny-rest"),
    ("alice", "127.0.0.1", "127.0.0.1:8080", "bind", 3, "deny-rest"),
    ("bob", "127.0.0.1", "127.0.0.1:8080", None, 3, "deny-rest"),
    ("alice", "192.0.2.7", "127.0.0.1:8080", None, 3, "default-deny"),  # no client rule
])
def test_explain(explain_cfg, user, src, to, command, rc, rule):
    args = ["explain", "--config", str(explain_cfg), "--user", user, "--from", src, "--to", to]
    if command:
        args += ["--command", command]
    res = run_bin(*args)
    assert res.returncode == rc, (res.stdout, res.stderr)
    assert rule in res.stdout, res.stdout
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("decision: " + ("pass" if rc == 0 else "block")), last


def test_explain_usage_errors(explain_cfg):
    res = run_bin("explain", "--config", str(explain_cfg), "--user", "alice", "--from", "nope",
                  "--to", "127.0.0.1:80")
    assert res.returncode == 2 and res.stderr.strip()
    res = run_bin("explain", "--config", str(explain_cfg), "--user", "alice", "--from",
                  "127.0.0.1", "--to", "127.0.0.1:99999")
    assert res.returncode == 2 and res.stderr.strip()


# --- hash-password ----------------------------------------------------------------------------

def test_hash_password_logs_in(gateway_factory, echo_server):
    pw = "S0me long pass phrase: with spaces & symbols \u00e9"
    res = run_bin("hash-password", input=pw + "\n")
    assert res.returncode == 0, res.stderr
    h = res.stdout.strip()
    assert h.startswith("$y$") and len(res.stdout.splitlines()) == 1, res.stdout
    assert pw not in res.stdout + res.stderr
    # Salted: hashing again gives a different string.
    assert run_bin("hash-password", input=pw + "\n").stdout.strip() != h
    gw = gateway_factory(users={"alice": h})
    s, _ = socks_connect(gw.addr("main"), "alice", pw, "127.0.0.1", echo_server.port)
    assert echo_roundtrip(s, b"hash ok") == b"hash ok"
    s.close()
    with pytest.raises(SocksError):
        socks_connect(gw.addr("main"), "alice", pw[:-1], "127.0.0.1", echo_server.port)


def test_hash_password_rejects_empty():
    res = run_bin("hash-password", input="\n")
    assert res.returncode == 2
    assert res.stdout == ""


# --- SIGHUP reload ----------------------------------------------------------------------------

def add_dave(gw, config=None):
    """Adds user dave (password file) and a rule for him (policy)."""
    users = dict(gw.passwords)
    users["dave"] = "dave-Secret-4"
    gw.write_users(users)
    pol = default_policy()
    pol["rules"].insert(0, {"id": "dave-local", "action": "pass", "users": ["dave"],
                            "to": ["127.0.0.0/8", "::1/128"], "ports": ["1024-65535"]})
    cfg = config or default_config()
    cfg["policy"] = {"inline": pol}
    gw.config_path.write_text(json.dumps(cfg, indent=2))


def test_reload_keeps_listeners_and_ports(gateway, echo_server):
    """An unchanged listener survives a reload: same port (even when configured as 0), the
    ready file still right, and clients connecting to the old port are served."""
    before = gateway.read_ready()
    ok, line = gateway.reload()
    assert ok, line
    after = gateway.read_ready()
    assert after == before, f"ready file changed on reload:\n{before}\n{after}\n" + \
        gateway.log_text()
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"],
                         "127.0.0.1", echo_server.port)
    assert echo_roundtrip(s, b"same port") == b"same port"
    s.close()


def test_reload_adds_and_removes_listeners_and_moves_audit(gateway, echo_server):
    old6 = gateway.addr("main6")
    cfg = default_config()
    cfg["listeners"] = [cfg["listeners"][0],
                        {"name": "extra", "address": "127.0.0.1", "port": 0,
                         "methods": ["userpass"]}]
    cfg["audit"] = {"file": "audit-2.jsonl"}
    gateway.config_path.write_text(json.dumps(cfg))
    ok, line = gateway.reload()
    assert ok, line
    gateway.ready = gateway.read_ready()
    assert sorted(l["name"] for l in gateway.ready["listeners"]) == ["extra", "main"]
    assert connect_refused(old6), "a removed listener still accepts"
    for name in ("main", "extra"):
        s, _ = socks_connect(gateway.addr(name), "alice", gateway.passwords["alice"],
                             "127.0.0.1", echo_server.port)
        assert echo_roundtrip(s, name.encode()) == name.encode()
        s.close()
    gateway.audit_path = gateway.dir / "audit-2.jsonl"
    ends = gateway.wait_audit(lambda r: r.get("event") == "session_end", 2)
    assert sorted(r["listener"] for r in ends) == ["extra", "main"]
    # The old log holds only its own opening record (audit_start): no session went there.
    old = (gateway.dir / "audit.jsonl").read_text().splitlines()
    assert [json.loads(l)["event"] for l in old] == ["audit_start"], old


def test_reload_with_20_live_sessions(gateway, echo_server):
    n_sessions, rounds, chunk = 20, 12, 32 * 1024
    errors, counts, ports = [], {}, {}
    reload_done = threading.Event()
    started = threading.Barrier(n_sessions + 1)

    def worker(i):
        try:
            s, _ = socks_connect(gateway.addr("main" if i % 2 else "main6"), "alice",
                                 gateway.passwords["alice"], "127.0.0.1", echo_server.port)
            # IPv4 and IPv6 ephemeral ports are allocated independently: key by both.
            ports[i] = (s.getsockname()[0], local_port(s))
            total = 0
            for r in range(rounds):
                payload = os.urandom(chunk + i)
                if echo_roundtrip(s, payload) != payload:
                    raise AssertionError(f"session {i}: bad echo in round {r}")
                total += len(payload)
                if r == 0:
                    started.wait(timeout=30)
                if r == rounds // 2:
                    reload_done.wait(timeout=30)
                time.sleep(0.02)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b""
            s.close()
            counts[i] = total
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"session {i}: {e!r}")
            try:
                started.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_sessions)]
    for t in threads:
        t.start()
    started.wait(timeout=30)  # every session is up and has relayed data
    add_dave(gateway)
    ok, line = gateway.reload()
    reload_done.set()
    assert ok, line
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(counts) == n_sessions
    for i, (addr, port) in ports.items():
        end = gateway.wait_session_end(client=addr, client_port=port)
        assert end["close_reason"] == "closed", end
        assert end["bytes_up"] == counts[i] and end["bytes_down"] == counts[i], (end, counts[i])

    # dave exists now. (Ports from the rewritten ready file: see
    # test_reload_keeps_listeners_and_ports for whether they should have moved.)
    gateway.ready = gateway.read_ready()
    s, _ = socks_connect(gateway.addr("main"), "dave", "dave-Secret-4", "127.0.0.1",
                         echo_server.port)
    assert echo_roundtrip(s, b"dave is in") == b"dave is in"
    s.close()
    assert gateway.wait_session_end(user="dave")["rule"] == "dave-local"
    assert "dave-Secret-4" not in "\n".join(gateway.audit_lines()) + gateway.log_text()


def test_reload_new_user_before_and_after(gateway, echo_server):
    with pytest.raises(SocksError) as ei:
        socks_connect(gateway.addr("main"), "dave", "dave-Secret-4", "127.0.0.1",
                      echo_server.port)
    assert ei.value.stage == "auth"
    add_dave(gateway)
    # Not before the signal: the gateway reads files on reload only.
    with pytest.raises(SocksError):
        socks_connect(gateway.addr("main"), "dave", "dave-Secret-4", "127.0.0.1",
                      echo_server.port)
    ok, line = gateway.reload()
    assert ok, line
    gateway.ready = gateway.read_ready()
    s, _ = socks_connect(gateway.addr("main6"), "dave", "dave-Secret-4", "::1", echo_server.port)
    assert echo_roundtrip(s, b"x") == b"x"
    s.close()


def test_reload_password_change_drops_cached_password(gateway, echo_server):
    """Successful logins are cached (cache_ttl_s 60); a changed password must win on reload."""
    old = gateway.passwords["alice"]
    for _ in range(2):  # the second login is served from the cache
        s, _ = socks_connect(gateway.addr("main"), "alice", old, "127.0.0.1", echo_server.port)
        s.close()
    users = dict(gateway.passwords)
    users["alice"] = "alice-New-Secret-9"
    gateway.write_users(users)
    ok, line = gateway.reload()
    assert ok, line
    gateway.ready = gateway.read_ready()
    with pytest.raises(SocksError) as ei:
        socks_connect(gateway.addr("main"), "alice", old, "127.0.0.1", echo_server.port)
    assert ei.value.stage == "auth"
    s, _ = socks_connect(gateway.addr("main"), "alice", "alice-New-Secret-9", "127.0.0.1",
                         echo_server.port)
    s.close()


def test_reload_removed_user_cannot_log_in(gateway, echo_server):
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()
    gateway.write_users({"bob": gateway.passwords["bob"]})
    ok, line = gateway.reload()
    assert ok, line
    gateway.ready = gateway.read_ready()
    with pytest.raises(SocksError) as ei:
        socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"], "127.0.0.1",
                      echo_server.port)
    assert ei.value.stage == "auth"


# --- reload re-evaluates running sessions ---------------------------------------------------

def bob_policy(with_bob: bool = True) -> dict:
    pol = default_policy()
    if with_bob:
        pol["rules"].insert(0, {"id": "bob-local", "action": "pass", "users": ["bob"],
                                "to": ["127.0.0.0/8"], "ports": ["1024-65535"]})
    return pol


def write_config(gw, policy: dict, **policy_keys) -> None:
    cfg = default_config()
    cfg["policy"] = {"inline": policy, **policy_keys}
    gw.config_path.write_text(json.dumps(cfg, indent=2))


def test_reload_revokes_only_what_the_new_policy_forbids(gateway_factory, echo_server):
    """250 running sessions; a reload removes bob's rule: his 50 sessions close with reason
    `revoked` (naming the rule that now decides), alice's 200 go on untouched."""
    gw = gateway_factory(policy=bob_policy())
    socks = {}
    for i in range(250):
        user = "bob" if i % 5 == 0 else "alice"
        s, _ = socks_connect(gw.addr("main"), user, gw.passwords[user], "127.0.0.1",
                             echo_server.port)
        assert echo_roundtrip(s, b"before %d" % i) == b"before %d" % i
        socks[i] = (user, s)
    try:
        write_config(gw, bob_policy(with_bob=False))
        ok, line = gw.reload()
        assert ok, line
        assert "re-checking 250 running sessions" in line, line
        revoked = gw.wait_audit(lambda r: r.get("event") == "session_end" and
                                r.get("close_reason") == "revoked", count=50)
        assert len(revoked) == 50
        assert {r["user"] for r in revoked} == {"bob"}
        assert {r["revoked_rule"] for r in revoked} == {"deny-rest"}
        assert all("deny-rest" in r["revoked_reason"] for r in revoked)
        for i, (user, s) in socks.items():
            if user == "bob":
                how, rest = wait_closed(s)
                assert rest == b""
            else:
                assert echo_roundtrip(s, b"after %d" % i) == b"after %d" % i
    finally:
        for _, s in socks.values():
            s.close()
    ends = gw.wait_audit(lambda r: r.get("event") == "session_end", count=250)
    assert sum(r["close_reason"] == "closed" for r in ends) == 200
    assert_audit_schema(gw.audit_lines())


def test_revoke_grace_and_a_reload_that_restores(gateway_factory, echo_server):
    gw = gateway_factory(policy=bob_policy())
    write_config(gw, bob_policy(), revoke_grace_s=2)
    assert gw.reload()[0]
    s1, _ = socks_connect(gw.addr("main"), "bob", gw.passwords["bob"], "127.0.0.1",
                          echo_server.port)
    # Removed, then restored within the grace: the session survives.
    write_config(gw, bob_policy(with_bob=False), revoke_grace_s=2)
    assert gw.reload()[0]
    assert echo_roundtrip(s1, b"in grace") == b"in grace"
    write_config(gw, bob_policy(), revoke_grace_s=2)
    assert gw.reload()[0]
    time.sleep(3)
    assert echo_roundtrip(s1, b"restored") == b"restored"
    # Removed for good: still served during the grace, closed after it.
    write_config(gw, bob_policy(with_bob=False), revoke_grace_s=2)
    t0 = time.monotonic()
    assert gw.reload()[0]
    assert echo_roundtrip(s1, b"grace") == b"grace"
    wait_closed(s1, timeout=10)
    assert time.monotonic() - t0 >= 1.5
    s1.close()
    rec = gw.wait_session_end(user="bob")
    assert rec["close_reason"] == "revoked" and rec["revoked_rule"] == "deny-rest"


def test_reload_removing_user_from_password_file_revokes(gateway, echo_server):
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    assert echo_roundtrip(s, b"x") == b"x"
    gateway.write_users({"bob": gateway.passwords["bob"]})
    assert gateway.reload()[0]
    wait_closed(s)
    s.close()
    rec = gateway.wait_session_end(user="alice")
    assert rec["close_reason"] == "revoked"
    assert rec["revoked_reason"] == "the user is no longer in the password file"
    assert "revoked_rule" not in rec


def test_time_window_closing_revokes_running_sessions(gateway_factory, echo_server):
    """A rule with "when" passes alice only during the current UTC minute; bob's rule has no
    window. Just after the minute ends alice's running session closes as `revoked`, its record
    saying which window closed; bob's session goes on."""
    now = datetime.now(timezone.utc)
    if now.second >= 45:  # leave time to connect inside the window
        time.sleep(61 - now.second)
        now = datetime.now(timezone.utc)
    start = now.replace(second=0, microsecond=0)
    end_minute = start.hour * 60 + start.minute + 1
    end = "24:00" if end_minute == 24 * 60 else f"{end_minute // 60:02d}:{end_minute % 60:02d}"
    hours = f"{start:%H:%M}-{end}"
    pol = default_policy()
    pol["rules"] = [
        {"id": "alice-this-minute", "action": "pass", "users": ["alice"], "to": ["127.0.0.0/8"],
         "when": [{"hours": hours, "tz": "UTC"}]},
        {"id": "bob-local", "action": "pass", "users": ["bob"], "to": ["127.0.0.0/8"]},
        {"id": "deny-rest", "action": "block"},
    ]
    gw = gateway_factory(policy=pol)
    a, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    b, _ = socks_connect(gw.addr("main"), "bob", gw.passwords["bob"], "127.0.0.1",
                         echo_server.port)
    try:
        assert echo_roundtrip(a, b"inside") == b"inside"
        left = (start.timestamp() + 60) - time.time()
        assert left > 1, "the test must connect well inside the window"
        wait_closed(a, timeout=left + 15)
        closed_after = time.time() - (start.timestamp() + 60)
        assert closed_after >= 0, "closed before the window ended"
        assert echo_roundtrip(b, b"no window") == b"no window"
        rec = gw.wait_session_end(user="alice")
        assert rec["close_reason"] == "revoked"
        assert rec["revoked_rule"] == "deny-rest"
        assert rec["revoked_reason"].startswith(
            f"rule alice-this-minute no longer matches (when: "), rec["revoked_reason"]
        assert f"UTC is outside every day {hours})" in rec["revoked_reason"], rec["revoked_reason"]
        # A new session of alice's is refused too.
        with pytest.raises(SocksError) as ei:
            socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                          echo_server.port)
        assert ei.value.stage == "reply" and ei.value.data == 2
    finally:
        a.close()
        b.close()
    assert_audit_schema(gw.audit_lines())


@pytest.mark.parametrize("breakage", ["unknown-key", "syntax", "bad-hash", "missing-policy-file"])
def test_reload_broken_config_keeps_old(gateway, echo_server, breakage):
    add_dave(gateway)
    ok, line = gateway.reload()
    assert ok, line
    gateway.ready = gateway.read_ready()
    good_config = gateway.config_path.read_text()

    # Break it, and add eve at the same time: eve must not get in.
    users = dict(gateway.passwords)
    users["eve"] = "eve-Secret-5"
    gateway.write_users(users)
    cfg = json.loads(good_config)
    cfg["policy"]["inline"]["rules"].insert(0, {"id": "eve-local", "action": "pass",
                                                "users": ["eve"], "to": ["127.0.0.0/8"]})
    expect = None
    if breakage == "unknown-key":
        cfg["limits"]["max_sesions"] = 5
        gateway.config_path.write_text(json.dumps(cfg, indent=2))
        expect = "max_sesions"
    elif breakage == "syntax":
        gateway.config_path.write_text(json.dumps(cfg, indent=2)[:-3])
        expect = str(gateway.config_path)
    elif breakage == "bad-hash":
        gateway.config_path.write_text(json.dumps(cfg, indent=2))
        with open(gateway.users_path, "a") as f:
            f.write("mallory:not-a-hash\n")
        expect = "mallory"
    elif breakage == "missing-policy-file":
        cfg["policy"] = {"file": "gone.json"}
        gateway.config_path.write_text(json.dumps(cfg, indent=2))
        expect = "gone.json"
    ok, line = gateway.reload()
    assert not ok, line
    assert expect in line, f"the log does not say why: {line!r}"
    assert gateway.alive()
    assert gateway.read_ready()["listeners"] == gateway.ready["listeners"]

    # The old configuration is still in force: dave in, alice in, eve out.
    for user, pw in (("dave", "dave-Secret-4"), ("alice", gateway.passwords["alice"])):
        s, _ = socks_connect(gateway.addr("main"), user, pw, "127.0.0.1", echo_server.port)
        assert echo_roundtrip(s, b"old config") == b"old config"
        s.close()
    with pytest.raises(SocksError) as ei:
        socks_connect(gateway.addr("main"), "eve", "eve-Secret-5", "127.0.0.1", echo_server.port)
    assert ei.value.stage == "auth"

    # Fixing the file and reloading again works.
    gateway.config_path.write_text(good_config)
    gateway.write_users(users)
    ok, line = gateway.reload()
    assert ok, line


# --- SIGTERM drain ----------------------------------------------------------------------------

def test_sigterm_drains_running_session(gateway, echo_server):
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"],
                         "127.0.0.1", echo_server.port)
    cport = local_port(s)
    assert echo_roundtrip(s, b"before") == b"before"
    gateway.send_sigterm()

    # New connections are refused (listeners closed) on both listeners.
    deadline = time.monotonic() + 5
    while not (connect_refused(gateway.addr("main")) and connect_refused(gateway.addr("main6"))):
        assert time.monotonic() < deadline, "still accepting 5 s after SIGTERM"
        time.sleep(0.05)

    # The running session keeps working while draining.
    for i in range(5):
        payload = os.urandom(100_000)
        assert echo_roundtrip(s, payload) == payload
        time.sleep(0.1)
    assert gateway.alive(), "exited while a session was still running"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    s.close()
    t0 = time.monotonic()
    rc = gateway.proc.wait(timeout=10)
    assert rc == 0, gateway.log_text()
    assert time.monotonic() - t0 < 5
    end = gateway.wait_session_end(client_port=cport)
    assert end["close_reason"] == "closed"
    assert end["bytes_up"] == end["bytes_down"] == 6 + 500_000


def test_sigterm_drain_timeout_closes_sessions(gateway_factory, echo_server):
    gw = gateway_factory(config=default_config(drain_timeout_s=1))
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    cport = local_port(s)
    t0 = time.monotonic()
    gw.stop(timeout=10)  # asserts exit code 0
    took = time.monotonic() - t0
    assert 0.8 <= took <= 7, took
    assert wait_closed(s, timeout=3)[1] == b""
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "shutdown"


def test_sigterm_idle_gateway_exits_quickly(gateway):
    t0 = time.monotonic()
    gateway.stop()
    assert time.monotonic() - t0 < 3


# --- audit, field by field --------------------------------------------------------------------

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_time(s):
    assert RFC3339.match(s), s
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.mark.parametrize("listener,dst", [("main", "127.0.0.1"), ("main", "localhost"),
                                          ("main6", "127.0.0.1"), ("main6", "::1")])
def test_audit_session_end_fields(gateway, listener, dst):
    target = Target("::1" if dst == "::1" else "127.0.0.1")
    try:
        check_session_end_fields(gateway, target, listener, dst)
    finally:
        target.close()


def check_session_end_fields(gateway, target, listener, dst):
    t_before = datetime.now(timezone.utc)
    w0 = time.monotonic()
    s = connect_tcp(gateway.addr(listener))
    client_ip, cport = s.getsockname()[:2]
    s.sendall(greeting((2,)) + userpass("alice", gateway.passwords["alice"]) +
              request(dst, target.port))
    assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
    rep, baddr, bport = read_reply(s)
    assert rep == 0
    conn, peer = target.accept()
    # The reply carries the address the gateway used towards the target.
    assert (baddr, bport) == (peer[0], peer[1])
    s.sendall(b"u" * 1234)
    assert recv_exact(conn, 1234) == b"u" * 1234
    conn.sendall(b"d" * 4321)
    assert recv_exact(s, 4321) == b"d" * 4321
    s.close()
    assert wait_closed(conn) == ("eof", b"")
    conn.close()
    wall_ms = (time.monotonic() - w0) * 1000

    end = gateway.wait_session_end(client_port=cport)
    t_after = datetime.now(timezone.utc)
    expected = {
        "event": "session_end",
        "listener": listener,
        "client": client_ip,
        "client_port": cport,
        "method": "userpass",
        "user": "alice",
        "command": "connect",
        "host": dst,
        "port": target.port,
        "address": target.host,
        "rule": "alice-local",
        "decision": "pass",
        "bytes_up": 1234,
        "bytes_down": 4321,
        "phase": "relay",
        "close_reason": "closed",
    }
    for k, v in expected.items():
        assert end.get(k) == v, f"{k}: {end.get(k)!r} != {v!r} in {end}"
    # bound: the upstream socket's local address, i.e. what the target saw as its peer.
    # ("[v6]:port" would be the unambiguous spelling; plain "v6:port" is accepted too.)
    bound_ok = {f"{peer[0]}:{peer[1]}", f"[{peer[0]}]:{peer[1]}"}
    assert end.get("bound") in bound_ok, (end.get("bound"), bound_ok)
    assert re.fullmatch(r"[0-9a-f]{8,}", end["session"]), end["session"]
    start, when = parse_time(end["start"]), parse_time(end["time"])
    slack = 1  # seconds; clocks are the same, records have ms resolution
    assert (t_before - start).total_seconds() < slack
    assert start <= when and (when - t_after).total_seconds() < slack
    assert isinstance(end["duration_ms"], int) and 0 <= end["duration_ms"] <= wall_ms + 50
    assert abs((when - start).total_seconds() * 1000 - end["duration_ms"]) < 50
    # Exactly one session_start (durable before the reply) and one session_end for this
    # session, and none of its records holds the password.
    same = [r for r in gateway.audit() if r.get("session") == end["session"]]
    assert [r["event"] for r in same] == ["session_start", "session_end"]
    assert gateway.passwords["alice"] not in "\n".join(gateway.audit_lines())


def test_audit_session_ids_unique(gateway, echo_server):
    for _ in range(5):
        s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"],
                             "127.0.0.1", echo_server.port)
        s.close()
    for _ in range(3):
        try:
            socks_connect(gateway.addr("main"), "alice", "bad", "127.0.0.1", echo_server.port)
        except SocksError:
            pass
    ends = gateway.wait_audit(lambda r: r.get("event") == "session_end", 8)
    assert len({r["session"] for r in ends}) == 8
    fails = [r for r in gateway.audit() if r.get("event") == "auth_failure"]
    assert {r["session"] for r in fails} <= {r["session"] for r in ends}


NASTY = (b'ev"il\'\x01\x07\x1b[31m\t\n\r' + b"\\x41\\\\" + b"\xff\xfe" + "é€𝄞".encode() +
         b"\xed\xa0\x80" + b"\xc0\xaf" + b"\xf4\x90\x80\x80" + b"\x7f end")


def assert_audit_file_clean(gw):
    raw = gw.audit_path.read_bytes()
    raw.decode("utf-8")  # strict: valid UTF-8 throughout
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    n = 0
    for l in lines[:-1]:
        assert not any(c < 0x20 for c in l), l  # no raw control characters
        # The log's own records (audit_start, ...) are not about sessions.
        n += not json.loads(l)["event"].startswith("audit_")
    return n


def test_audit_escapes_untrusted_user(gateway):
    assert len(NASTY) < 255
    s = connect_tcp(gateway.addr("main"))
    cport = local_port(s)
    s.sendall(greeting((2,)) + userpass(NASTY, "some-password"))
    assert recv_exact(s, 4) == b"\x05\x02\x01\x01"
    s.close()
    end = gateway.wait_session_end(client_port=cport)
    fail = gateway.wait_audit(lambda r: r.get("event") == "auth_failure")[0]
    n = assert_audit_file_clean(gateway)
    assert n == 2, gateway.audit_lines()
    assert fail["reason"] == "unknown_user"
    for rec in (fail, end):
        assert unescape_untrusted(rec["user"]) == NASTY, rec["user"]
    # The escaping is the documented one, not something else that happens to round-trip.
    assert "\\xff\\xfe" in fail["user"] and "\\\\x41" in fail["user"] and "é€𝄞" in fail["user"]


def test_audit_escapes_untrusted_host(gateway_factory):
    # Names only in the rule, so the nasty name is refused before any DNS lookup.
    pol = {"client_rules": [{"id": "lo", "action": "pass", "from": ["127.0.0.0/8"]}],
           "rules": [{"id": "alice-names", "action": "pass", "users": ["alice"],
                      "to": ["localhost"]}, {"id": "deny-rest", "action": "block"}]}
    gw = gateway_factory(policy=pol)
    host = NASTY.replace(b"\n", b"\n.")
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    s.sendall(greeting((2,)) + userpass("alice", gw.passwords["alice"]) + request(host, 8080))
    assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
    assert read_reply(s)[0] == 2
    s.close()
    end = gw.wait_session_end(client_port=cport)
    denied = gw.wait_audit(lambda r: r.get("event") == "denied")[0]
    assert assert_audit_file_clean(gw) == 2
    for rec in (denied, end):
        assert unescape_untrusted(rec["host"]) == host, rec["host"]
        assert rec["port"] == 8080
    assert end["close_reason"] == "policy_denied"
