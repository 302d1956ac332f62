"""The relay: half-close, resets, exact byte counts, big transfers, idle timeout."""

import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from sgtest import (IO_TIMEOUT, connect_tcp, default_config, greeting, local_port, read_reply,
                    recv_all, recv_exact, request, socks_connect, userpass, wait_closed, Target)


def open_session(gw, target, listener="main", host=None):
    """SOCKS CONNECT through gw to target; returns (client socket, target-side socket, BND)."""
    s, bnd = socks_connect(gw.addr(listener), "alice", gw.passwords["alice"],
                           host or target.host, target.port)
    conn, peer = target.accept()
    return s, conn, bnd, peer


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory()


def test_client_half_close(gw, target):
    """Client shuts down its write side: the target sees EOF and can still answer."""
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    up = os.urandom(100_000)
    s.sendall(up)
    s.shutdown(socket.SHUT_WR)
    assert recv_all(conn) == up  # all of it, then EOF
    down = os.urandom(150_000)
    conn.sendall(down)  # the target can still send
    time.sleep(0.2)
    conn.sendall(b"after a pause")
    conn.shutdown(socket.SHUT_WR)
    assert recv_all(s) == down + b"after a pause"
    conn.close()
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "closed"
    assert end["bytes_up"] == len(up)
    assert end["bytes_down"] == len(down) + len(b"after a pause")


def test_target_half_close(gw, target):
    """The target shuts down its write side: the client sees EOF and can still send."""
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    down = os.urandom(120_000)
    conn.sendall(down)
    conn.shutdown(socket.SHUT_WR)
    assert recv_all(s) == down
    up = os.urandom(130_000)
    s.sendall(up)
    time.sleep(0.2)
    s.sendall(b"late words")
    s.shutdown(socket.SHUT_WR)
    assert recv_all(conn) == up + b"late words"
    s.close()
    conn.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "closed"
    assert end["bytes_up"] == len(up) + len(b"late words")
    assert end["bytes_down"] == len(down)


def test_half_closed_session_is_not_ended_early(gw, target):
    """After one side's FIN the session stays up for the other direction (no premature close)."""
    s, conn, _, _ = open_session(gw, target)
    s.shutdown(socket.SHUT_WR)
    assert conn.recv(10) == b""
    time.sleep(1.0)
    conn.sendall(b"x" * 10)
    assert recv_exact(s, 10) == b"x" * 10
    conn.close()
    assert wait_closed(s) == ("eof", b"")
    s.close()


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_upstream_reset_reaches_client(gw, target):
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    s.sendall(b"hello")
    assert recv_exact(conn, 5) == b"hello"
    rst_close(conn)
    with pytest.raises(ConnectionResetError):
        s.settimeout(IO_TIMEOUT)
        while True:
            if not s.recv(1024):
                raise AssertionError("client saw a clean EOF, not a reset")
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "upstream_reset"
    assert end["bytes_up"] == 5


def test_client_reset_reaches_target(gw, target):
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    conn.sendall(b"hi")
    assert recv_exact(s, 2) == b"hi"
    rst_close(s)
    with pytest.raises(ConnectionResetError):
        while True:
            if not conn.recv(1024):
                raise AssertionError("target saw a clean EOF, not a reset")
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "client_reset"
    assert end["bytes_down"] == 2


@pytest.mark.parametrize("merged", [False, True], ids=["separate", "data-with-request"])
def test_exact_byte_counts(gw, target, merged):
    """bytes_up/bytes_down are exactly what crossed, including data sent along with the
    request (before the reply) and odd sizes in many writes."""
    up_chunks = [os.urandom(n) for n in (1, 7, 4096, 65537, 3, 200_001)]
    down_chunks = [os.urandom(n) for n in (13, 1, 99_999, 8191)]
    early = b"early bytes, sent with the request" if merged else b""
    s = connect_tcp(gw.addr("main"))
    cport = local_port(s)
    s.sendall(greeting((2,)) + userpass("alice", gw.passwords["alice"]) +
              request("127.0.0.1", target.port) + early)
    assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
    assert read_reply(s)[0] == 0
    conn, _ = target.accept()

    got_up = bytearray()

    def reader():
        while True:
            c = conn.recv(65536)
            if not c:
                return
            got_up.extend(c)

    t = threading.Thread(target=reader)
    t.start()
    for c in up_chunks:
        s.sendall(c)
    for c in down_chunks:
        conn.sendall(c)
    s.shutdown(socket.SHUT_WR)
    t.join(IO_TIMEOUT)
    conn.shutdown(socket.SHUT_WR)
    got_down = recv_all(s)
    s.close()
    conn.close()
    up = early + b"".join(up_chunks)
    down = b"".join(down_chunks)
    assert bytes(got_up) == up
    assert got_down == down
    end = gw.wait_session_end(client_port=cport)
    assert end["bytes_up"] == len(up)
    assert end["bytes_down"] == len(down)
    assert end["close_reason"] == "closed"


def pattern_stream(seed: int, total: int, chunk: int = 1 << 20):
    """Yields `total` bytes of cheap, non-repeating data in chunks."""
    block = hashlib.sha512(str(seed).encode()).digest() * (chunk // 64)
    sent = 0
    i = 0
    while sent < total:
        n = min(chunk, total - sent)
        head = struct.pack(">QQ", seed, i)
        yield (head + block[len(head):])[:n]
        sent += n
        i += 1


def test_64mib_each_way(gw, target):
    total = 64 << 20
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    s.settimeout(60)
    conn.settimeout(60)
    results = {}

    def send(sock, seed, key):
        h = hashlib.sha256()
        for c in pattern_stream(seed, total):
            sock.sendall(c)
            h.update(c)
        sock.shutdown(socket.SHUT_WR)
        results[key + "_sent"] = h.hexdigest()

    def recv(sock, key):
        h = hashlib.sha256()
        n = 0
        while True:
            c = sock.recv(1 << 20)
            if not c:
                break
            h.update(c)
            n += len(c)
        results[key + "_got"] = h.hexdigest()
        results[key + "_len"] = n

    threads = [threading.Thread(target=send, args=(s, 1, "up")),
               threading.Thread(target=recv, args=(conn, "up")),
               threading.Thread(target=send, args=(conn, 2, "down")),
               threading.Thread(target=recv, args=(s, "down"))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    took = time.monotonic() - t0
    s.close()
    conn.close()
    assert results.get("up_len") == total and results.get("down_len") == total, results
    assert results["up_got"] == results["up_sent"]
    assert results["down_got"] == results["down_sent"]
    end = gw.wait_session_end(client_port=cport)
    assert end["bytes_up"] == total
    assert end["bytes_down"] == total
    assert end["close_reason"] == "closed"
    assert took < 60, took


def test_idle_timeout(gateway_factory, target):
    gw = gateway_factory(config=default_config(idle_timeout_s=1))
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    t0 = time.monotonic()
    how, got = wait_closed(s, timeout=6)
    took = time.monotonic() - t0
    assert got == b""
    assert 0.9 <= took <= 3.0, took
    assert wait_closed(conn, timeout=3)[1] == b""
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "idle_timeout"
    assert end["phase"] == "relay"


@pytest.mark.parametrize("direction", ["up", "down"])
def test_activity_keeps_session_alive(gateway_factory, target, direction):
    """Idle means idle: traffic in either direction resets the clock."""
    gw = gateway_factory(config=default_config(idle_timeout_s=1))
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    sender, receiver = (s, conn) if direction == "up" else (conn, s)
    for i in range(8):  # 2.4 s in total, well past the 1 s idle timeout
        sender.sendall(b"tick")
        assert recv_exact(receiver, 4) == b"tick"
        time.sleep(0.3)
    t0 = time.monotonic()
    assert wait_closed(s, timeout=6)[1] == b""
    assert time.monotonic() - t0 <= 3.0
    s.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["close_reason"] == "idle_timeout"
    assert end["bytes_up" if direction == "up" else "bytes_down"] == 32


def test_ipv6_relay_and_reply_address(gw):
    """IPv6 listener to IPv6 target: the reply's BND is the gateway's upstream address."""
    t6 = Target("::1")
    try:
        s, conn, bnd, peer = open_session(gw, t6, listener="main6")
        cport = local_port(s)
        assert bnd == (peer[0], peer[1])
        data = os.urandom(1 << 20)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(conn) == data
        conn.close()
        assert recv_all(s) == b""
        s.close()
        end = gw.wait_session_end(client_port=cport)
        assert end["address"] == "::1" and end["bytes_up"] == len(data)
    finally:
        t6.close()


def bulk_session(gw, target, direction: str, blob, bulk: int) -> bool:
    """One session: `bulk` bytes by sendfile, then a 1000-byte tail the sender waits on, then
    50 small request/response rounds. Checks every byte and the counts; returns whether the
    relay went into bulk mode."""
    s, conn, _, _ = open_session(gw, target)
    cport = local_port(s)
    sender, receiver = (s, conn) if direction == "up" else (conn, s)
    got = {}

    def drain():
        buf = bytearray(1 << 20)
        n = 0
        while n < bulk:
            k = receiver.recv_into(buf, min(len(buf), bulk - n))
            if not k:
                break
            n += k
        got["n"] = n

    t = threading.Thread(target=drain)
    t.start()
    with open(blob, "rb") as f:
        assert sender.sendfile(f) == bulk  # os.sendfile, waiting as the socket's timeout says
    t.join(4 * IO_TIMEOUT)
    assert got.get("n") == bulk
    tail = os.urandom(1000)
    sender.sendall(tail)
    assert recv_exact(receiver, len(tail)) == tail, "the tail arrives without more data behind it"
    receiver.sendall(b"ok")
    assert recv_exact(sender, 2) == b"ok"
    rounds = 50
    for i in range(rounds):
        msg = struct.pack(">I", i) * 4
        sender.sendall(msg)
        assert recv_exact(receiver, len(msg)) == msg
        receiver.sendall(msg[::-1])
        assert recv_exact(sender, len(msg)) == msg[::-1]
    s.close()
    conn.close()
    end = gw.wait_session_end(client_port=cport)
    forward, back = bulk + len(tail) + 16 * rounds, 2 + 16 * rounds
    assert (end["bytes_up"], end["bytes_down"]) == (
        (forward, back) if direction == "up" else (back, forward))
    return f"session {end['session']}: relay went into bulk mode" in gw.log_text()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_bulk_stream_then_tail_and_ping_pong(gw, target, direction, tmp_path):
    """A fast stream puts the splice pump into bulk mode (woken per 256 KiB, each sleep bounded
    by 500 us). What follows must not wait for more data: a tail far smaller than the low-water
    mark that the sender then waits on, and small request/response rounds both ways."""
    bulk = 64 << 20
    blob = tmp_path / "bulk"
    blob.write_bytes(os.urandom(1 << 20) * (bulk >> 20))
    # Bulk mode starts at >= 1 MiB per 10 ms: sendfile and recv_into keep the endpoints far
    # above that, and a machine loaded by other tests gets a few sessions to get there.
    assert any(bulk_session(gw, target, direction, blob, bulk) for _ in range(5)), \
        "the relay never went into bulk mode"
