"""Real third-party SOCKS5 clients through socksgate: curl, PySocks, ncat; every hash kind."""

import os
import socket
import subprocess

import pytest
import socks  # PySocks (python3-socks)

from sgtest import (IO_TIMEOUT, SocksError, echo_roundtrip, make_hash, recv_all, sha256,
                    socks_connect)

TARGETS = ["127.0.0.1", "::1", "localhost"]
LISTENERS = ["main", "main6"]


def url_host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


def proxy_hostport(gw, listener: str) -> str:
    addr, port = gw.addr(listener)
    return f"{url_host(addr)}:{port}"


def run_curl(args, timeout=60):
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", *args],
                          capture_output=True, timeout=timeout)


# How curl is told about the proxy, and whether the gateway sees a name or an address.
CURL_MODES = {
    # --socks5: curl resolves locally, sends an address.
    "socks5-U": lambda hp, u, p: ["--socks5", hp, "-U", f"{u}:{p}"],
    # --socks5-hostname: the gateway resolves.
    "socks5-hostname-U": lambda hp, u, p: ["--socks5-hostname", hp, "-U", f"{u}:{p}"],
    # URL form with credentials inside.
    "url-socks5h": lambda hp, u, p: ["-x", f"socks5h://{u}:{p}@{hp}"],
    "url-socks5": lambda hp, u, p: ["-x", f"socks5://{u}:{p}@{hp}"],
}


def expected_audit_host(mode: str, target: str) -> str:
    remote_name = mode in ("socks5-hostname-U", "url-socks5h")
    if target == "localhost":
        return "localhost" if remote_name else "127.0.0.1"  # /etc/hosts: localhost = 127.0.0.1
    return target


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mode", list(CURL_MODES))
def test_curl_fetches_file(gateway, http_server, mode, listener, target):
    pw = gateway.passwords["alice"]
    args = CURL_MODES[mode](proxy_hostport(gateway, listener), "alice", pw)
    res = run_curl([*args, http_server.url(url_host(target))])
    assert res.returncode == 0, res.stderr.decode(errors="replace") + gateway.log_text()
    assert len(res.stdout) == len(http_server.body)
    assert sha256(res.stdout) == http_server.sha256

    rec = gateway.wait_session_end(host=expected_audit_host(mode, target))
    assert rec["listener"] == listener
    assert rec["client"] == ("::1" if listener == "main6" else "127.0.0.1")
    assert rec["user"] == "alice"
    assert rec["method"] == "userpass"
    assert rec["rule"] == "alice-local"
    assert rec["decision"] == "pass"
    assert rec["port"] == http_server.port
    assert rec["address"] == ("::1" if target == "::1" else "127.0.0.1")
    assert rec["close_reason"] == "closed"
    # The whole file plus HTTP headers came down; the request went up.
    assert rec["bytes_down"] > len(http_server.body)
    assert rec["bytes_down"] < len(http_server.body) + 1024
    assert 0 < rec["bytes_up"] < 1024
    assert pw not in "\n".join(gateway.audit_lines())
    assert pw not in gateway.log_text()


@pytest.mark.parametrize("mode", ["socks5-hostname-U", "url-socks5"])
def test_curl_wrong_password_fails(gateway, http_server, mode):
    args = CURL_MODES[mode](proxy_hostport(gateway, "main"), "alice", "not-the-password")
    res = run_curl([*args, http_server.url("127.0.0.1")])
    assert res.returncode != 0
    assert res.stdout == b""
    rec = gateway.wait_session_end(close_reason="auth_failed")
    assert rec["user"] == "alice"
    failures = [r for r in gateway.audit() if r.get("event") == "auth_failure"]
    assert len(failures) == 1 and failures[0]["reason"] == "bad_password", failures
    assert "not-the-password" not in "\n".join(gateway.audit_lines())
    assert "not-the-password" not in gateway.log_text()


def pysocks_get(gw, listener, target, port, path, rdns, user="alice", password=None):
    addr, pport = gw.addr(listener)
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socks.socksocket(fam, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    s.set_proxy(socks.SOCKS5, addr, pport, rdns=rdns, username=user,
                password=password if password is not None else gw.passwords[user])
    try:
        s.connect((target, port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {url_host(target)}\r\n\r\n".encode())
        raw = recv_all(s)
    finally:
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("rdns", [True, False], ids=["rdns", "local-dns"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("listener", LISTENERS)
def test_pysocks_fetches_file(gateway, http_server, listener, target, rdns):
    head, body = pysocks_get(gateway, listener, target, http_server.port, http_server.path, rdns)
    assert head.startswith(b"HTTP/1.0 200"), head
    assert sha256(body) == http_server.sha256

    if target == "localhost":
        host = "localhost" if rdns else "127.0.0.1"
    else:
        host = target
    rec = gateway.wait_session_end(host=host)
    assert rec["listener"] == listener
    assert rec["user"] == "alice"
    assert rec["close_reason"] == "closed"
    assert rec["address"] == ("::1" if target == "::1" else "127.0.0.1")


def test_pysocks_wrong_password_refused(gateway, http_server):
    with pytest.raises(socks.ProxyError):
        pysocks_get(gateway, "main", "127.0.0.1", http_server.port, http_server.path, True,
                    password="wrong-password")
    rec = gateway.wait_session_end(close_reason="auth_failed")
    assert rec["user"] == "alice"


def test_pysocks_anonymous_on_none_listener_is_policy_denied(gateway, http_server):
    """main6 also offers method "none"; the policy has no rule for anonymous users."""
    s = socks.socksocket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    s.set_proxy(socks.SOCKS5, "::1", gateway.port("main6"), rdns=True)
    with pytest.raises(socks.GeneralProxyError) as ei:
        s.connect(("127.0.0.1", http_server.port))
    s.close()
    assert "0x02" in str(ei.value) or "not allowed" in str(ei.value).lower(), str(ei.value)
    rec = gateway.wait_session_end(close_reason="policy_denied")
    assert rec["method"] == "none"
    assert "user" not in rec or rec["user"] == ""
    assert rec["rule"] == "deny-rest"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("listener", LISTENERS)
def test_ncat_echo(gateway, echo_server, listener, target):
    data = os.urandom(256 * 1024)
    res = subprocess.run(
        ["ncat", "--proxy", proxy_hostport(gateway, listener), "--proxy-type", "socks5",
         "--proxy-auth", "alice:" + gateway.passwords["alice"], target, str(echo_server.port)],
        input=data, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert sha256(res.stdout) == sha256(data)
    rec = gateway.wait_session_end(host=target)
    assert rec["bytes_up"] == len(data)
    assert rec["bytes_down"] == len(data)
    assert rec["close_reason"] == "closed"
    assert rec["listener"] == listener


def test_ncat_wrong_password_fails(gateway, echo_server):
    res = subprocess.run(
        ["ncat", "--proxy", proxy_hostport(gateway, "main"), "--proxy-type", "socks5",
         "--proxy-auth", "alice:wrong", "127.0.0.1", str(echo_server.port)],
        input=b"hello", capture_output=True, timeout=60)
    assert res.returncode != 0
    assert res.stdout == b""


HASH_KINDS = ["yescrypt", "sha512", "bcrypt", "socksgate"]


@pytest.mark.parametrize("kind", HASH_KINDS)
def test_hash_kinds_log_in(gateway_factory, http_server, echo_server, kind):
    pw = f"Pw-{kind}-x9!"
    h = make_hash(pw, kind)
    prefix = {"yescrypt": "$y$", "sha512": "$6$", "bcrypt": "$2", "socksgate": "$"}[kind]
    assert h.startswith(prefix), h
    policy = {
        "client_rules": [{"id": "lo", "action": "pass", "from": ["127.0.0.0/8", "::1/128"]}],
        "rules": [{"id": "carol-local", "action": "pass", "users": ["carol"],
                   "to": ["127.0.0.0/8", "::1/128"], "ports": ["1024-65535"]},
                  {"id": "deny-rest", "action": "block"}],
    }
    gw = gateway_factory(users={"carol": h}, policy=policy)

    # A real client with the right password.
    res = run_curl(["--socks5-hostname", proxy_hostport(gw, "main"), "-U", f"carol:{pw}",
                    http_server.url("127.0.0.1")])
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert sha256(res.stdout) == http_server.sha256

    # Raw SOCKS with the right password, then the wrong one.
    s, _ = socks_connect(gw.addr("main6"), "carol", pw, "::1", echo_server.port)
    assert echo_roundtrip(s, b"ping " * 100) == b"ping " * 100
    s.close()
    with pytest.raises(SocksError) as ei:
        socks_connect(gw.addr("main"), "carol", pw + "x", "127.0.0.1", echo_server.port)
    assert ei.value.stage == "auth" and ei.value.data == b"\x01\x01"

    ends = gw.wait_audit(lambda r: r.get("event") == "session_end", 3)
    assert sorted(r["close_reason"] for r in ends) == ["auth_failed", "closed", "closed"]
    assert all(r["user"] == "carol" for r in ends)
    fails = [r for r in gw.audit() if r.get("event") == "auth_failure"]
    assert [f["reason"] for f in fails] == ["bad_password"]
