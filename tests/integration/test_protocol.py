"""RFC 1928 / RFC 1929 on raw sockets: every answer byte, every audit record, and the gateway
keeps serving good clients after each bad one."""

import json
import os
import random
import socket
import struct
import threading
import time

import pytest

from sgtest import (REP_ATYP_NOT_SUPPORTED, REP_CMD_NOT_SUPPORTED, REP_NOT_ALLOWED,
                    REP_OK, SocksError, assert_serves, connect_tcp, default_config,
                    echo_roundtrip, greeting, local_port, read_reply, recv_exact, request,
                    socks_connect, userpass, wait_closed, Target)

FAILURE_DELAY_MS = 300


def config(**limits):
    cfg = default_config(**limits)
    cfg["auth"]["userpass"]["failure_delay_ms"] = FAILURE_DELAY_MS
    return cfg


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(config=config())


def auth_only(gw, user, password, listener="main", source=None):
    """Greeting + RFC 1929; returns (socket, status bytes, seconds from auth sent to answer)."""
    s = connect_tcp(gw.addr(listener), source)
    s.sendall(greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    t0 = time.monotonic()
    s.sendall(userpass(user, password))
    status = recv_exact(s, 2)
    return s, status, time.monotonic() - t0


def authed(gw, listener="main", user="alice"):
    s = connect_tcp(gw.addr(listener))
    s.sendall(greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    s.sendall(userpass(user, gw.passwords[user]))
    assert recv_exact(s, 2) == b"\x01\x00"
    return s


# --- authentication failures ------------------------------------------------------------------

@pytest.mark.parametrize("case", ["bad_password", "unknown_user", "empty_password", "empty_user"])
def test_auth_failure_same_answer_after_delay(gw, echo_server, case):
    user, pw = {"bad_password": ("alice", "wrong-password"),
                "unknown_user": ("mallory", "whatever-pw"),
                "empty_password": ("alice", ""),
                "empty_user": ("", "something")}[case]
    s, status, took = auth_only(gw, user, pw)
    port = local_port(s)
    assert status == b"\x01\x01", status
    assert took >= FAILURE_DELAY_MS / 1000 - 0.01, f"answered after {took:.3f}s"
    how, extra = wait_closed(s)
    assert extra == b"" and how == "eof", (how, extra)
    s.close()

    fail = gw.wait_audit(lambda r: r.get("event") == "auth_failure" and r["client_port"] == port)
    assert fail[0]["reason"] == case
    if user:
        assert fail[0]["user"] == user
    end = gw.wait_session_end(client_port=port)
    assert end["close_reason"] == "auth_failed"
    assert end["phase"] == "authentication"
    assert end["method"] == "userpass"
    assert "bound" not in end and end["bytes_up"] == 0 and end["bytes_down"] == 0
    text = "\n".join(gw.audit_lines()) + gw.log_text()
    if pw:
        assert pw not in text
    assert_serves(gw, echo_server)


def test_unknown_user_indistinguishable_from_bad_password(gw):
    """Same bytes and a similar delay: no user enumeration by timing (best of 3 each, so a
    busy machine does not make it flaky)."""
    times = {}
    for user in ("alice", "nosuchuser"):
        best = None
        for i in range(3):
            s, status, took = auth_only(gw, user, f"wrong-{i}")
            assert status == b"\x01\x01"
            s.close()
            best = took if best is None else min(best, took)
        times[user] = best
    assert abs(times["alice"] - times["nosuchuser"]) < 0.1, times


@pytest.mark.parametrize("methods", [(0x00,), (0x00, 0x01, 0x80, 0xFE), ()],
                         ids=["none-only", "several-unsupported", "zero-methods"])
def test_no_acceptable_method(gw, echo_server, methods):
    s = connect_tcp(gw.addr("main"))
    port = local_port(s)
    s.sendall(greeting(methods))
    assert recv_exact(s, 2) == b"\x05\xff"
    how, extra = wait_closed(s)
    assert (how, extra) == ("eof", b"")
    s.close()
    end = gw.wait_session_end(client_port=port)
    assert end["close_reason"] == "no_acceptable_method"
    assert end["phase"] == "method_selection"
    if methods:
        fail = gw.wait_audit(lambda r: r.get("event") == "auth_failure" and r["client_port"] == port)
        assert fail[0]["reason"] == "no_acceptable_method"
    assert_serves(gw, echo_server)


def test_method_preference_is_the_listeners(gw, echo_server):
    """main6 offers userpass then none: a client offering both gets userpass."""
    s = connect_tcp(gw.addr("main6"))
    s.sendall(greeting((0x00, 0x02)))
    assert recv_exact(s, 2) == b"\x05\x02"
    s.close()


# --- requests -----------------------------------------------------------------------------

# Loopback only: even a broken policy must not make this test send traffic off the box.
@pytest.mark.parametrize("dst", ["127.0.0.1:80", "localhost:80", "::1:1023"])
def test_policy_deny(gw, echo_server, dst):
    host, port = dst.rsplit(":", 1)
    s = authed(gw)
    cport = local_port(s)
    s.sendall(request(host, int(port)))
    rep, baddr, bport = read_reply(s)
    assert rep == REP_NOT_ALLOWED
    assert wait_closed(s) == ("eof", b"")
    s.close()
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r["client_port"] == cport)
    assert denied[0]["stage"] == "request"
    assert denied[0]["rule"] == "deny-rest"
    assert denied[0]["decision"] == "block"
    assert denied[0]["user"] == "alice"
    assert denied[0]["host"] == host and denied[0]["port"] == int(port)
    assert denied[0].get("reason")
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "policy_denied"
    assert end["rule"] == "deny-rest"
    assert end["decision"] == "block"
    assert end["host"] == host and end["port"] == int(port)
    assert "bound" not in end
    assert_serves(gw, echo_server)


def test_protected_destinations_need_an_explicit_rule(gateway_factory, echo_server):
    """bob may go "anywhere": that must still not include loopback (default deny of protected
    ranges), neither by address nor by a name that resolves to loopback."""
    pol = {"client_rules": [{"id": "lo", "action": "pass", "from": ["127.0.0.0/8", "::1/128"]}],
           "rules": [{"id": "alice-local", "action": "pass", "users": ["alice"],
                      "to": ["127.0.0.0/8", "::1/128"]},
                     {"id": "bob-anywhere", "action": "pass", "users": ["bob"]},
                     {"id": "bob-names", "action": "pass", "users": ["bob"], "to": ["*"]}]}
    gw = gateway_factory(config=config(), policy=pol)
    t4, t6 = Target("127.0.0.1"), Target("::1")
    try:
        # Every spelling of "this host" (all resolved locally: no DNS query is made).
        spellings = [("127.0.0.1", t4), ("::1", t6), ("localhost", t4), ("LOCALHOST", t4),
                     ("::ffff:127.0.0.1", t4), ("::127.0.0.1", t4), ("0.0.0.0", t4), ("::", t6),
                     (b"127.1", t4), (b"2130706433", t4), (b"0x7f000001", t4),
                     (b"::ffff:127.0.0.1", t4), (b"::1", t6)]
        for host, t in spellings:
            with pytest.raises(SocksError) as ei:
                socks_connect(gw.addr("main"), "bob", gw.passwords["bob"], host, t.port)
            assert ei.value.stage == "reply" and ei.value.data == REP_NOT_ALLOWED, host
        ends = gw.wait_audit(lambda r: r.get("event") == "session_end", len(spellings))
        assert all(r["close_reason"] == "policy_denied" for r in ends), ends
        assert all(r["decision"] == "block" for r in ends), ends
        # Nothing ever reached the targets.
        assert not t4.pending(0.2) and not t6.pending(0.0)
        # ...while alice's explicit rule does reach them.
        s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "::1", t6.port)
        conn, _ = t6.accept()
        s.close()
    finally:
        t4.close()
        t6.close()


def test_unknown_command(gw, echo_server):
    s = authed(gw)
    cport = local_port(s)
    s.sendall(bytes([5, 0x09, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", echo_server.port))
    rep, _, _ = read_reply(s)
    assert rep == REP_CMD_NOT_SUPPORTED
    assert wait_closed(s) == ("eof", b"")
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "unsupported_command"
    assert_serves(gw, echo_server)


def test_unknown_address_type(gw, echo_server):
    s = authed(gw)
    cport = local_port(s)
    s.sendall(bytes([5, 1, 0, 0x05, 127, 0, 0, 1]) + struct.pack(">H", echo_server.port))
    rep, _, _ = read_reply(s)
    assert rep == REP_ATYP_NOT_SUPPORTED
    assert wait_closed(s) == ("eof", b"")
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "unsupported_address_type"
    assert_serves(gw, echo_server)


def test_connection_refused_upstream(gw, echo_server):
    """A loopback port nobody listens on: REP 05, audit connection_refused."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()  # bound but never listening: connects are refused
    s = authed(gw)
    cport = local_port(s)
    s.sendall(request("127.0.0.1", dead_port))
    rep, _, _ = read_reply(s)
    assert rep == 0x05
    assert wait_closed(s) == ("eof", b"")
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "connection_refused"
    assert end["decision"] == "pass" and end["rule"] == "alice-local"
    assert end["address"] == "127.0.0.1" and end["phase"] == "connect"
    assert_serves(gw, echo_server)


# --- framing: split and merged ------------------------------------------------------------

def conversation(gw, echo_port, pieces_sender):
    """Runs greeting+auth+request+payload through `pieces_sender`; returns what came back."""
    s = connect_tcp(gw.addr("main"))
    payload = b"payload-" + os.urandom(32)
    msgs = [greeting((0x02,)), userpass("alice", gw.passwords["alice"]),
            request("127.0.0.1", echo_port)]
    pieces_sender(s, msgs, payload)
    got = recv_exact(s, 2) + recv_exact(s, 2)
    rep, baddr, bport = read_reply(s)
    echoed = recv_exact(s, len(payload))
    s.close()
    return got, rep, baddr, echoed == payload


def send_byte_by_byte(s, msgs, payload):
    # Every byte in its own segment: sleep so Nagle/coalescing cannot merge them.
    for m in msgs:
        for i in range(len(m)):
            s.send(m[i:i + 1])
            time.sleep(0.003)
    s.sendall(payload)


def send_merged(s, msgs, payload):
    s.sendall(b"".join(msgs) + payload)


def test_split_and_merged_messages_behave_identically(gw, echo_server):
    split = conversation(gw, echo_server.port, send_byte_by_byte)
    merged = conversation(gw, echo_server.port, send_merged)
    assert split == (b"\x05\x02\x01\x00", REP_OK, "127.0.0.1", True)
    assert merged == split
    ends = gw.wait_audit(lambda r: r.get("event") == "session_end", 2)
    assert [r["close_reason"] for r in ends] == ["closed", "closed"]
    assert ends[0]["bytes_up"] == ends[1]["bytes_up"] == 40
    assert ends[0]["bytes_down"] == ends[1]["bytes_down"] == 40


def test_split_domain_request_byte_by_byte(gw, echo_server):
    s = connect_tcp(gw.addr("main"))
    msg = greeting((0x02,)) + userpass("alice", gw.passwords["alice"]) + \
        request("localhost", echo_server.port)
    for i in range(len(msg)):
        s.send(msg[i:i + 1])
        time.sleep(0.003)
    assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
    assert read_reply(s)[0] == REP_OK
    assert echo_roundtrip(s, b"xyz") == b"xyz"
    s.close()


# --- garbage --------------------------------------------------------------------------------

TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303" + "00" * 32 + "00" + "0020" + "c02bc02fc02cc030cca9cca8c013c014"
    "009c009d002f0035000a0100" + "0058" + "00000014001200000f7777772e6578616d706c652e636f6d"
    "000a00080006001d00170018000b00020100000d00140012040308040401050308050501080606010201"
    "002b0003020304" + "0000000000000000000000000000")


def random_garbage():
    rnd = random.Random(1928)
    first = rnd.choice([b for b in range(256) if b not in (4, 5)])
    return bytes([first]) + bytes(rnd.randrange(256) for _ in range(300))


GARBAGE = {
    "random": random_garbage(),
    "http": b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n",
    "connect": b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
    "tls": TLS_CLIENT_HELLO,
    "socks5-bad-auth-version": greeting((0x02,)) + b"\x02\x05alice\x03abc",
    "socks5-bad-request-version": None,  # filled in the test: needs the password
    "socks4-ish-after-auth": None,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_is_closed_and_gateway_survives(gw, echo_server, kind):
    data = GARBAGE[kind]
    if kind == "socks5-bad-request-version":
        data = greeting((0x02,)) + userpass("alice", gw.passwords["alice"]) + \
            b"\x04\x01\x00\x01\x7f\x00\x00\x01\x1f\x90"
    elif kind == "socks4-ish-after-auth":
        data = greeting((0x02,)) + userpass("alice", gw.passwords["alice"]) + b"\x05"
        data += b"\xff" * 40
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    t0 = time.monotonic()
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    how, got = wait_closed(s, timeout=5)
    took = time.monotonic() - t0
    s.close()
    # Closed promptly (not by the 10 s negotiation timeout), with at most the SOCKS answers
    # that the valid prefix earned.
    assert took < 3, took
    assert got in (b"", b"\x05\x02", b"\x05\x02\x01\x00",
                   b"\x05\x02\x01\x00\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00",
                   b"\x05\x02\x01\x00\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"), got
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] in ("protocol_error", "unsupported_command"), end
    assert end["close_reason"] != "closed"
    assert_serves(gw, echo_server)


def test_truncated_and_longest_requests(gateway_factory, echo_server):
    """Half a request then EOF; a request with a 255-byte domain name (the longest)."""
    # Names only in alice's rule, so a name no rule allows is refused before any DNS query.
    pol = {"client_rules": [{"id": "lo", "action": "pass", "from": ["127.0.0.0/8", "::1/128"]}],
           "rules": [{"id": "alice-names", "action": "pass", "users": ["alice"],
                      "to": ["localhost"], "ports": ["1024-65535"]},
                     {"id": "deny-rest", "action": "block"}]}
    gw = gateway_factory(config=config(), policy=pol)
    s = authed(gw)
    cport = local_port(s)
    s.sendall(b"\x05\x01\x00\x03\x10abc")
    s.shutdown(socket.SHUT_WR)
    assert wait_closed(s) == ("eof", b"")
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] in ("closed", "protocol_error"), end
    assert end["phase"] == "request"

    s = authed(gw)
    cport = local_port(s)
    name = b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 61 + b".x"
    assert len(name) == 255
    s.sendall(request(name, echo_server.port))
    rep, _, _ = read_reply(s)
    assert rep == REP_NOT_ALLOWED
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["host"] == name.decode() and end["close_reason"] == "policy_denied"
    assert end["rule"] == "deny-rest"
    # The rule's name does work, split across the whole request.
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "localhost",
                         echo_server.port)
    assert echo_roundtrip(s, b"ok") == b"ok"
    s.close()


# --- clients that go away -----------------------------------------------------------------

def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.mark.parametrize("stage", ["partial-greeting", "after-greeting", "after-auth"])
def test_client_reset_during_negotiation(gw, echo_server, stage):
    """A reset is the client going away, not a protocol error (audit and counters must tell a
    flaky network from a malformed peer)."""
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    if stage == "partial-greeting":
        s.sendall(b"\x05")
    else:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
    if stage == "after-auth":
        s.sendall(userpass("alice", gw.passwords["alice"]))
        assert recv_exact(s, 2) == b"\x01\x00"
    time.sleep(0.05)  # the gateway is now waiting in a read
    rst_close(s)
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "client_reset", end
    assert_serves(gw, echo_server)


@pytest.mark.parametrize("stage", ["after-greeting", "after-auth"])
def test_client_close_during_negotiation(gw, echo_server, stage):
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    s.sendall(greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    if stage == "after-auth":
        s.sendall(userpass("alice", gw.passwords["alice"]))
        assert recv_exact(s, 2) == b"\x01\x00"
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "closed", end


def test_client_reset_right_after_connect_keeps_its_address(gw, echo_server):
    """Connect and reset at once, many times. Each accepted connection must be audited with
    the real client address and port (known at accept), as one session_end saying the client
    went away; the client rules must not be judged against a made-up 0.0.0.0."""
    ports = set()
    for _ in range(30):
        s = connect_tcp(gw.addr("main"))
        ports.add(local_port(s))
        rst_close(s)
    assert_serves(gw, echo_server)  # also orders: every reset connection was accepted by now
    time.sleep(0.3)
    recs = gw.audit()
    bogus = [r for r in recs if r.get("client_port") not in ports | {None}
             and r.get("client") != "127.0.0.1"]
    assert not bogus, "records without the real client address:\n" + \
        "\n".join(json.dumps(r) for r in bogus[:4])
    denied = [r for r in recs if r.get("event") == "denied"]
    assert not denied, denied[:2]
    ends = [r for r in recs if r.get("event") == "session_end" and r["client_port"] in ports]
    assert len(ends) == len({r["client_port"] for r in ends}), "duplicate session_end"
    assert ends, "no session_end for the reset connections"
    # The reset may already be consumed when the session first reads: EOF is fine there.
    assert {r["close_reason"] for r in ends} <= {"client_reset", "closed"}, \
        sorted({r["close_reason"] for r in ends})


def test_one_session_end_per_connection_under_a_mixed_crowd(gw, echo_server):
    """200 concurrent clients of every kind: exactly one session_end each, right reason."""
    kinds = ["good", "badpw", "garbage", "denied", "close-after-greeting", "good-reset"]
    expected = {"good": "closed", "badpw": "auth_failed", "garbage": "protocol_error",
                "denied": "policy_denied", "close-after-greeting": "closed",
                "good-reset": "client_reset"}
    got_ports, errors = {}, []
    pw = gw.passwords["alice"]

    def client(i):
        kind = kinds[i % len(kinds)]
        try:
            s = connect_tcp(gw.addr("main" if i % 2 else "main6"))
            # Keyed by (address, port): IPv4 and IPv6 ephemeral ports can coincide.
            got_ports[(s.getsockname()[0], local_port(s))] = kind
            if kind in ("good", "good-reset"):
                s.sendall(greeting() + userpass("alice", pw) + request("127.0.0.1", echo_server.port))
                assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
                assert read_reply(s)[0] == REP_OK
                assert echo_roundtrip(s, b"z" * 5000) == b"z" * 5000
                if kind == "good":
                    s.close()
                else:
                    rst_close(s)
            elif kind == "badpw":
                s.sendall(greeting() + userpass(f"user{i}", "bad"))
                assert recv_exact(s, 4) == b"\x05\x02\x01\x01"
                s.close()
            elif kind == "garbage":
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                wait_closed(s)
                s.close()
            elif kind == "denied":
                s.sendall(greeting() + userpass("alice", pw) + request("127.0.0.1", 80))
                assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
                assert read_reply(s)[0] == REP_NOT_ALLOWED
                s.close()
            elif kind == "close-after-greeting":
                s.sendall(greeting())
                assert recv_exact(s, 2) == b"\x05\x02"
                s.close()
        except Exception as e:  # noqa: BLE001 - collected
            errors.append(f"{kind}: {e!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    ends = gw.wait_audit(lambda r: r.get("event") == "session_end", 200, timeout=20)
    assert len(ends) == 200
    by_port = {}
    for r in ends:
        key = (r["client"], r["client_port"])
        assert key not in by_port, f"two session_end for one connection: {r}"
        by_port[key] = r
    assert set(by_port) == set(got_ports)
    wrong = [(got_ports[p], r["close_reason"]) for p, r in by_port.items()
             if r["close_reason"] != expected[got_ports[p]]]
    assert not wrong, wrong[:10]


# --- throttle -------------------------------------------------------------------------------

def test_throttle_per_source(gateway_factory, echo_server):
    cfg = config()
    cfg["auth"]["userpass"]["failure_delay_ms"] = 50
    cfg["auth"]["userpass"]["throttle"] = {"max_failures": 3, "window_s": 60, "lockout_s": 300}
    gw = gateway_factory(config=cfg)
    pw = gw.passwords["alice"]
    for i in range(3):
        s, status, _ = auth_only(gw, "alice", f"wrong-{i}", source="127.0.0.1")
        assert status == b"\x01\x01"
        s.close()
    # The right password from the same source: refused, reason throttled.
    s, status, _ = auth_only(gw, "alice", pw, source="127.0.0.1")
    cport = local_port(s)
    assert status == b"\x01\x01"
    assert wait_closed(s)[0] == "eof"
    s.close()
    fail = gw.wait_audit(lambda r: r.get("event") == "auth_failure" and r["client_port"] == cport)
    assert fail[0]["reason"] == "throttled"
    assert fail[0]["user"] == "alice"
    reasons = [r["reason"] for r in gw.audit() if r.get("event") == "auth_failure"]
    assert reasons == ["bad_password"] * 3 + ["throttled"]

    # From another source address the same user gets in.
    s, bnd = socks_connect(gw.addr("main"), "alice", pw, "127.0.0.1", echo_server.port,
                           source="127.0.0.2")
    assert echo_roundtrip(s, b"from .2") == b"from .2"
    s.close()
    end = gw.wait_session_end(client="127.0.0.2")
    assert end["close_reason"] == "closed" and end["user"] == "alice"

    # Still locked from the first source, and other users there are unaffected.
    s, status, _ = auth_only(gw, "alice", pw, source="127.0.0.1")
    assert status == b"\x01\x01"
    s.close()
    s, status, _ = auth_only(gw, "bob", gw.passwords["bob"], source="127.0.0.1")
    assert status == b"\x01\x00"
    s.close()


# --- deadlines and caps ---------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["silent", "after-greeting", "after-auth", "partial-request"])
def test_negotiation_timeout(gateway_factory, echo_server, stage):
    gw = gateway_factory(config=config(negotiation_timeout_ms=500))
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    t0 = time.monotonic()
    if stage != "silent":
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
    if stage in ("after-auth", "partial-request"):
        s.sendall(userpass("alice", gw.passwords["alice"]))
        assert recv_exact(s, 2) == b"\x01\x00"
    if stage == "partial-request":
        s.sendall(b"\x05\x01\x00\x01\x7f")
    how, got = wait_closed(s, timeout=6)
    took = time.monotonic() - t0
    s.close()
    assert got == b""
    assert 0.4 <= took <= 3.0, took
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "negotiation_timeout"
    assert end["phase"] == {"silent": "method_selection", "after-greeting": "authentication",
                            "after-auth": "request", "partial-request": "request"}[stage]
    assert_serves(gw, echo_server)


def test_negotiation_timeout_does_not_limit_relay(gateway_factory, echo_server):
    gw = gateway_factory(config=config(negotiation_timeout_ms=500))
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    time.sleep(1.2)
    assert echo_roundtrip(s, b"still here") == b"still here"
    s.close()


def test_max_sessions_per_user(gateway_factory, echo_server):
    gw = gateway_factory(config=config(max_sessions_per_user=2))
    pw = gw.passwords["alice"]
    first = [socks_connect(gw.addr("main"), "alice", pw, "127.0.0.1", echo_server.port)[0]
             for _ in range(2)]
    for s in first:
        assert echo_roundtrip(s, b"live") == b"live"

    s = authed(gw)
    cport = local_port(s)
    s.sendall(request("127.0.0.1", echo_server.port))
    rep, _, _ = read_reply(s)
    assert rep == REP_NOT_ALLOWED
    assert wait_closed(s)[0] == "eof"
    s.close()
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r["client_port"] == cport)
    assert denied[0]["stage"] == "limit"
    assert denied[0]["reason"] == "limit:sessions_per_user"
    assert denied[0]["user"] == "alice"
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "limit:sessions"

    # The cap is per user: bob is not counted against alice... (bob has no pass rule, so he
    # gets policy_denied, not a limit).
    with pytest.raises(SocksError) as ei:
        socks_connect(gw.addr("main"), "bob", gw.passwords["bob"], "127.0.0.1", echo_server.port)
    assert ei.value.data == REP_NOT_ALLOWED
    gw.wait_session_end(user="bob", close_reason="policy_denied")

    # Ending one session frees a slot.
    first[0].close()
    gw.wait_audit(lambda r: r.get("event") == "session_end" and r["close_reason"] == "closed")
    s, _ = socks_connect(gw.addr("main"), "alice", pw, "127.0.0.1", echo_server.port)
    assert echo_roundtrip(s, b"again") == b"again"
    s.close()
    first[1].close()


def test_max_sessions_per_source(gateway_factory, echo_server):
    gw = gateway_factory(config=config(max_sessions_per_source=2))
    pw = gw.passwords["alice"]
    held = [socks_connect(gw.addr("main"), "alice", pw, "127.0.0.1", echo_server.port,
                          source="127.0.0.1")[0] for _ in range(2)]
    s = connect_tcp(gw.addr("main"), source="127.0.0.1")
    cport = local_port(s)
    try:
        s.sendall(greeting((0x02,)))
    except OSError:
        pass
    how, got = wait_closed(s)
    assert got == b""
    s.close()
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r["client_port"] == cport)
    assert denied[0]["reason"] == "limit:sessions_per_source"
    assert gw.wait_session_end(client_port=cport)["close_reason"] == "limit:sessions"
    # Another source is not affected.
    s, _ = socks_connect(gw.addr("main"), "alice", pw, "127.0.0.1", echo_server.port,
                         source="127.0.0.3")
    assert echo_roundtrip(s, b"x") == b"x"
    s.close()
    for h in held:
        h.close()


def test_client_rules_block_source(gateway_factory, echo_server):
    pol = {"client_rules": [{"id": "only-dot-one", "action": "pass", "from": ["127.0.0.1/32"]},
                            {"id": "no-others", "action": "block", "from": ["0.0.0.0/0"]}],
           "rules": [{"id": "alice-local", "action": "pass", "users": ["alice"],
                      "to": ["127.0.0.0/8"], "ports": ["1024-65535"]}]}
    gw = gateway_factory(config=config(), policy=pol)
    s = connect_tcp(gw.addr("main"), source="127.0.0.5")
    cport = local_port(s)
    try:
        s.sendall(greeting((0x02,)))
    except OSError:
        pass
    assert wait_closed(s)[1] == b""
    s.close()
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r["client_port"] == cport)
    assert denied[0]["stage"] == "client"
    assert denied[0]["rule"] == "no-others"
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "client_denied"
    assert_serves(gw, echo_server)


def test_many_concurrent_failed_logins_do_not_block_good_ones(gw, echo_server):
    """Failure delays are timers, not sleeping threads: a good login is not stuck behind a
    crowd of bad ones (40 x 300 ms on a small pool would take seconds)."""
    socks_ = []
    for i in range(40):
        s = connect_tcp(gw.addr("main"))
        s.sendall(greeting((0x02,)) + userpass(f"nobody{i}", "bad"))
        socks_.append(s)
    t0 = time.monotonic()
    assert_serves(gw, echo_server)
    assert time.monotonic() - t0 < 3.0
    for s in socks_:
        assert recv_exact(s, 4) == b"\x05\x02\x01\x01"
        s.close()
