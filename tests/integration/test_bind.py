"""BIND (RFC 1928 section 4): two replies, only the expected peer, timeout, policy, caps."""

import os
import socket
import time

import pytest

from sgtest import (IO_TIMEOUT, connect_tcp, default_config, default_policy, greeting,
                    local_port, read_reply, recv_all, recv_exact, request, userpass, wait_closed)

REP_OK, REP_NOT_ALLOWED, REP_HOST_UNREACHABLE = 0, 2, 4


def bind_policy() -> dict:
    p = default_policy()
    p["rules"].insert(0, {"id": "alice-bind", "action": "pass", "users": ["alice"],
                          "commands": ["bind"], "to": ["127.0.0.0/8", "::1/128"]})
    return p


def bind_config(**bind) -> dict:
    c = default_config()
    c["bind"] = {"ports": "47000-47999", "timeout_s": 30, "max_per_user": 4}
    c["bind"].update(bind)
    return c


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(config=bind_config(), policy=bind_policy())


def start_bind(gw, expected_host, user="alice", listener="main"):
    """Authenticates and sends BIND; returns (socket, first reply)."""
    s = connect_tcp(gw.addr(listener))
    s.sendall(greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    s.sendall(userpass(user, gw.passwords[user]))
    assert recv_exact(s, 2) == b"\x01\x00"
    s.sendall(request(expected_host, 0, cmd=2))
    return s, read_reply(s)


def test_bind_two_replies_data_both_ways_and_eof(gw):
    s, (rep, addr, port) = start_bind(gw, "127.0.0.1")
    cport = local_port(s)
    assert rep == REP_OK
    assert addr == "127.0.0.1" and 47000 <= port <= 47999
    peer = connect_tcp((addr, port))
    rep2, paddr, pport = read_reply(s)
    assert rep2 == REP_OK
    assert (paddr, pport) == peer.getsockname()[:2], "second reply names the peer"
    up, down = os.urandom(200_000), os.urandom(300_000)
    s.sendall(up)
    peer.sendall(down)
    peer.shutdown(socket.SHUT_WR)
    assert recv_exact(peer, len(up)) == up
    assert recv_all(s) == down, "peer's EOF reaches the client"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(peer) == b"", "client's EOF reaches the peer"
    s.close()
    peer.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["command"] == "bind"
    assert end["close_reason"] == "closed"
    assert end["rule"] == "alice-bind" and end["decision"] == "pass"
    assert end["bound"] == f"127.0.0.1:{port}"
    assert end["address"] == "127.0.0.1"
    assert end["bytes_up"] == len(up) and end["bytes_down"] == len(down)


def test_bind_rejects_other_peers(gw):
    s, (rep, addr, port) = start_bind(gw, "127.0.0.2")
    cport = local_port(s)
    assert rep == REP_OK
    wrong = connect_tcp((addr, port), source="127.0.0.1")
    assert wait_closed(wrong)[0] in ("eof", "reset"), "an unexpected peer is closed"
    wrong.close()
    right = connect_tcp((addr, port), source="127.0.0.2")
    rep2, paddr, _ = read_reply(s)
    assert rep2 == REP_OK and paddr == "127.0.0.2"
    right.sendall(b"hello")
    assert recv_exact(s, 5) == b"hello"
    s.close()
    right.close()
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r.get("stage") == "bind_peer")
    assert denied[0]["peer"].startswith("127.0.0.1:")
    assert denied[0]["client_port"] == cport
    end = gw.wait_session_end(client_port=cport)
    assert end["address"] == "127.0.0.2"


def test_bind_timeout(gateway_factory):
    gw = gateway_factory(config=bind_config(timeout_s=1), policy=bind_policy())
    s, (rep, addr, port) = start_bind(gw, "127.0.0.1")
    cport = local_port(s)
    assert rep == REP_OK
    t0 = time.monotonic()
    rep2, _, _ = read_reply(s)
    took = time.monotonic() - t0
    assert rep2 == REP_HOST_UNREACHABLE
    assert 0.8 <= took <= 4.0, took
    assert wait_closed(s)[0] == "eof"
    s.close()
    assert gw.wait_session_end(client_port=cport)["close_reason"] == "bind_timeout"
    probe = socket.socket()
    with pytest.raises(OSError):
        probe.settimeout(2)
        probe.connect((addr, port))
    probe.close()


def test_bind_denied_by_policy(gw):
    s, (rep, _, _) = start_bind(gw, "127.0.0.1", user="bob")
    cport = local_port(s)
    assert rep == REP_NOT_ALLOWED
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "policy_denied"
    assert end["command"] == "bind"
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r["client_port"] == cport)
    assert denied[0]["stage"] == "request"


def test_bind_ends_when_client_leaves(gw):
    s, (rep, addr, port) = start_bind(gw, "127.0.0.1")
    cport = local_port(s)
    assert rep == REP_OK
    s.close()
    end = gw.wait_session_end(client_port=cport, timeout=5)
    assert end["close_reason"] == "closed"
    assert end["phase"] == "bind_wait"
    probe = socket.socket()
    probe.settimeout(2)
    with pytest.raises(OSError):
        probe.connect((addr, port))
    probe.close()


def test_bind_cap_per_user(gateway_factory):
    gw = gateway_factory(config=bind_config(max_per_user=1), policy=bind_policy())
    first, (rep, _, _) = start_bind(gw, "127.0.0.1")
    assert rep == REP_OK
    second, (rep2, _, _) = start_bind(gw, "127.0.0.1")
    cport = local_port(second)
    assert rep2 == REP_NOT_ALLOWED
    second.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "limit:binds"
    first.close()


def test_bind_over_ipv6(gw):
    s, (rep, addr, port) = start_bind(gw, "::1", listener="main6")
    assert rep == REP_OK and addr == "::1"
    peer = connect_tcp((addr, port))
    rep2, paddr, _ = read_reply(s)
    assert rep2 == REP_OK and paddr == "::1"
    peer.sendall(b"v6")
    assert recv_exact(s, 2) == b"v6"
    s.close()
    peer.close()


def test_bind_port_range_is_validated(gateway_factory, tmp_path):
    gw = gateway_factory(config=bind_config(ports="80-90"), policy=bind_policy(), start=False)
    import subprocess
    r = subprocess.run([gw.bin, "validate", "--config", str(gw.config_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "\"ports\" must be \"MIN-MAX\" with 1024 <= MIN" in r.stderr
