"""SOCKS4 and SOCKS4a: curl --socks4/--socks4a, off by default, only rules naming socks4."""

import hashlib
import socket
import struct
import subprocess

import pytest

from sgtest import connect_tcp, default_config, default_policy, local_port, recv_exact, wait_closed


def socks4_config(enabled=True) -> dict:
    c = default_config()
    c["listeners"][0]["socks4"] = enabled
    return c


def socks4_policy() -> dict:
    p = default_policy()
    p["rules"].insert(0, {"id": "legacy-web", "action": "pass", "methods": ["socks4"],
                          "commands": ["connect", "bind"],
                          "to": ["127.0.0.0/8", "localhost"], "ports": ["1024-65535"]})
    return p


def curl(*args):
    return subprocess.run(["curl", "-s", "--max-time", "20", *args], capture_output=True)


@pytest.mark.parametrize("flag,host,audit_host", [("--socks4", "127.0.0.1", "127.0.0.1"),
                                                  ("--socks4a", "localhost", "localhost")])
def test_curl_socks4_and_4a(gateway_factory, http_server, flag, host, audit_host):
    gw = gateway_factory(config=socks4_config(), policy=socks4_policy())
    res = curl(flag, f"127.0.0.1:{gw.port('main')}", http_server.url(host))
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256(res.stdout).hexdigest() == http_server.sha256
    rec = gw.wait_session_end(host=audit_host)
    assert rec["method"] == "socks4"
    assert "user" not in rec, "SOCKS4 identities are anonymous"
    assert rec["rule"] == "legacy-web"
    assert rec["address"] == "127.0.0.1"
    assert rec["close_reason"] == "closed"
    assert rec["bytes_down"] > len(http_server.body)


def test_socks4_is_off_by_default(gateway_factory, http_server):
    gw = gateway_factory(config=socks4_config(enabled=False), policy=socks4_policy())
    res = curl("--socks4", f"127.0.0.1:{gw.port('main')}", http_server.url("127.0.0.1"))
    assert res.returncode != 0
    rec = gw.wait_session_end(method="socks4")
    assert rec["close_reason"] == "socks4_disabled"
    # the other listener was never enabled either
    s = connect_tcp(gw.addr("main6"))
    s.sendall(b"\x04\x01" + struct.pack(">H", http_server.port) + bytes([127, 0, 0, 1]) + b"x\x00")
    assert recv_exact(s, 2) == b"\x00\x5b"
    s.close()


def test_socks4_matches_only_rules_naming_it(gateway_factory, http_server):
    """The default policy's alice rule has no methods selector: it must not serve SOCKS4."""
    gw = gateway_factory(config=socks4_config(), policy=default_policy())
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    # USERID "alice" is recorded but never trusted.
    s.sendall(b"\x04\x01" + struct.pack(">H", http_server.port) + bytes([127, 0, 0, 1]) +
              b"alice\x00")
    assert recv_exact(s, 8)[:2] == b"\x00\x5b"
    assert wait_closed(s)[0] == "eof"
    s.close()
    rec = gw.wait_session_end(client_port=cport)
    assert rec["close_reason"] == "policy_denied"
    assert rec["socks4_userid"] == "alice"
    assert "user" not in rec


def test_socks4_raw_reply_and_bad_requests(gateway_factory, echo_server):
    gw = gateway_factory(config=socks4_config(), policy=socks4_policy())
    s = connect_tcp(gw.addr("main"))
    s.sendall(b"\x04\x01" + struct.pack(">H", echo_server.port) + bytes([127, 0, 0, 1]) + b"\x00")
    reply = recv_exact(s, 8)
    assert reply[:2] == b"\x00\x5a"
    port = struct.unpack(">H", reply[2:4])[0]
    assert socket.inet_ntoa(reply[4:8]) == "127.0.0.1" and port != 0
    s.sendall(b"ping")
    assert recv_exact(s, 4) == b"ping"
    s.close()
    # Unknown command, and a 4a host name that never ends: answered 5B, closed.
    for bad in (b"\x04\x07\x00\x50\x7f\x00\x00\x01\x00",
                b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 300):
        s = connect_tcp(gw.addr("main"))
        s.sendall(bad)
        assert recv_exact(s, 2) == b"\x00\x5b"
        assert wait_closed(s)[0] in ("eof", "reset")
        s.close()


def test_socks4_bind(gateway_factory):
    """04 02: first reply = listening address, second = the peer; then data flows."""
    c = socks4_config()
    c["bind"] = {"ports": "47000-47999", "timeout_s": 30}
    gw = gateway_factory(config=c, policy=socks4_policy())
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    s.sendall(b"\x04\x02" + struct.pack(">H", 2121) + bytes([127, 0, 0, 1]) + b"ftp\x00")
    first = recv_exact(s, 8)
    assert first[:2] == b"\x00\x5a"
    port = struct.unpack(">H", first[2:4])[0]
    addr = socket.inet_ntoa(first[4:8])
    assert addr == "127.0.0.1" and 47000 <= port <= 47999
    peer = connect_tcp((addr, port))
    second = recv_exact(s, 8)
    assert second[:2] == b"\x00\x5a"
    assert struct.unpack(">H", second[2:4])[0] == peer.getsockname()[1]
    peer.sendall(b"data from the server")
    assert recv_exact(s, 20) == b"data from the server"
    s.close()
    peer.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["command"] == "bind" and end["method"] == "socks4"
    assert end["socks4_userid"] == "ftp"
