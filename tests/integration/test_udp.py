"""UDP ASSOCIATE (RFC 1928 section 7): relay both ways, headers, client pinning, FRAG, policy per
destination, caps, end of the association, audit."""

import os
import select
import socket
import struct
import threading
import time

import pytest
import socks

from sgtest import (IO_TIMEOUT, connect_tcp, default_config, default_policy, encode_addr,
                    greeting, local_port, read_reply, recv_exact, request, userpass, wait_closed)

REP_OK, REP_NOT_ALLOWED = 0, 2
CMD_UDP = 3
QUIET = 0.3  # how long "nothing arrives" is watched for


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def udp_policy(to=("127.0.0.0/8", "::1/128", "localhost"), ports=None) -> dict:
    p = default_policy()
    rule = {"id": "alice-udp", "action": "pass", "users": ["alice"], "commands": ["udp"],
            "to": list(to)}
    if ports is not None:
        rule["ports"] = list(ports)
    p["rules"].insert(0, rule)
    return p


def udp_config(**udp) -> dict:
    c = default_config()
    c["udp"] = {"idle_timeout_s": 300, "max_datagrams_per_s": 20000,
                "max_bytes_per_s": 67108864, "max_destinations": 1024}
    c["udp"].update(udp)
    return c


def family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class UdpEcho:
    """A UDP echo server on `host`. Records every datagram (time, payload, sender).

    reply_from_other: the answer leaves from a second socket (another port), as a server that
    answers from elsewhere would. copies: answers per datagram (an amplifier)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, reply_from_other: bool = False,
                 copies: int = 1):
        fam = family(host)
        self.host = host
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.out = self.sock
        if reply_from_other:
            self.out = socket.socket(fam, socket.SOCK_DGRAM)
            self.out.bind((host, 0))
        self.copies = copies
        self.received: list[tuple[float, bytes, tuple]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            with self._lock:
                self.received.append((time.monotonic(), data, peer))
            for i in range(self.copies):
                try:
                    self.out.sendto(data if self.copies == 1 else struct.pack(">I", i) + data,
                                    peer)
                except OSError:
                    pass

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [d for _, d, _ in self.received]

    def senders(self) -> list[tuple]:
        with self._lock:
            return [p for _, _, p in self.received]

    def times(self) -> list[float]:
        with self._lock:
            return [t for t, _, _ in self.received]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        if self.out is not self.sock:
            self.out.close()


class UdpEchoPair:
    """UDP echo on 127.0.0.1 and ::1 at the same port (for "localhost", whatever it resolves to)."""

    def __init__(self):
        last = None
        for _ in range(50):
            v6 = UdpEcho("::1")
            try:
                v4 = UdpEcho("127.0.0.1", v6.port)
            except OSError as e:
                last = e
                v6.close()
                continue
            self.v4, self.v6, self.port = v4, v6, v6.port
            return
        raise AssertionError(f"could not bind UDP v4 and v6 on one port: {last}")

    def close(self):
        self.v4.close()
        self.v6.close()


@pytest.fixture
def echo4():
    e = UdpEcho("127.0.0.1")
    yield e
    e.close()


@pytest.fixture
def echo6():
    e = UdpEcho("::1")
    yield e
    e.close()


@pytest.fixture
def echo_lh():
    e = UdpEchoPair()
    yield e
    e.close()


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(config=udp_config(), policy=udp_policy())


def associate(gw, listener: str = "main", user: str = "alice", dst=("0.0.0.0", 0)):
    """Control connection + UDP ASSOCIATE. Returns (control socket, (REP, BND.ADDR, BND.PORT))."""
    s = connect_tcp(gw.addr(listener))
    s.sendall(greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    s.sendall(userpass(user, gw.passwords[user]))
    assert recv_exact(s, 2) == b"\x01\x00"
    s.sendall(request(dst[0], dst[1], cmd=CMD_UDP))
    return s, read_reply(s)


def udp_header(host, port: int, frag: int = 0) -> bytes:
    return b"\x00\x00" + bytes([frag]) + encode_addr(host) + struct.pack(">H", port)


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    u = socket.socket(family(host), socket.SOCK_DGRAM)
    u.bind((host, 0))
    return u


def recv_dgram(u: socket.socket, timeout: float = IO_TIMEOUT) -> bytes | None:
    r, _, _ = select.select([u], [], [], timeout)
    if not r:
        return None
    return u.recv(65535)


def assert_quiet(u: socket.socket, wait: float = QUIET) -> None:
    got = recv_dgram(u, wait)
    assert got is None, f"unexpected datagram {got!r}"


def roundtrip(u, relay, host, port, payload, sender=None) -> bytes:
    """Sends one datagram through the relay; returns the reply, which must be the echo with the
    sender's address (byte-exact) in the header."""
    u.sendto(udp_header(host, port) + payload, relay)
    got = recv_dgram(u)
    assert got is not None, f"no reply for the datagram to {host}:{port}"
    want = udp_header(sender or host, port) + payload
    assert got == want, f"reply {got!r}, expected {want!r}"
    return got


def end_of(gw, ctl: socket.socket, timeout: float = IO_TIMEOUT) -> dict:
    """Closes the control connection; returns the association's session_end."""
    cport = local_port(ctl)
    ctl.close()
    return gw.wait_session_end(client_port=cport, timeout=timeout)


def dests(end: dict) -> dict:
    return {d["address"]: d for d in end["udp"]["destinations"]}


def dropped(end: dict, **expected) -> None:
    """dropped.* are exactly `expected`, every other counter 0."""
    d = end["udp"]["dropped"]
    keys = {"foreign_source", "fragmented", "malformed", "denied", "rate", "unsolicited",
            "unresolved", "destinations", "oversize", "unroutable"}
    assert set(d) == keys, d
    for k in keys:
        assert d[k] == expected.get(k, 0), f"dropped.{k} = {d[k]}, expected " \
                                           f"{expected.get(k, 0)}: {end}"


def assert_flow(d: dict, up: list[bytes], down: list[bytes], rule="alice-udp", host=None):
    assert d["datagrams_up"] == len(up), d
    assert d["bytes_up"] == sum(map(len, up)), d
    assert d["datagrams_down"] == len(down), d
    assert d["bytes_down"] == sum(map(len, down)), d
    assert d["rule"] == rule, d
    if host is None:
        assert "host" not in d or d["host"] in ("", None), d
    else:
        assert d["host"] == host, d
    assert d["first_seen"] and d["last_seen"] and d["first_seen"] <= d["last_seen"], d


# --------------------------------------------------------------------------------------------
# 1. PySocks
# --------------------------------------------------------------------------------------------

def test_pysocks_udp_ip_and_domain(gw, echo4, echo_lh):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", gw.port("main"), username="alice",
                password=gw.passwords["alice"])
    s.settimeout(IO_TIMEOUT)
    try:
        ip_payloads = [os.urandom(n) for n in (1, 100, 1400, 8000)]
        for p in ip_payloads:
            s.sendto(p, ("127.0.0.1", echo4.port))
            data, frm = s.recvfrom(65535)
            assert data == p
            assert frm == ("127.0.0.1", echo4.port)
        lh_payloads = [os.urandom(n) for n in (7, 512, 3000)]
        lh_addrs = set()
        for p in lh_payloads:
            s.sendto(p, ("localhost", echo_lh.port))
            data, frm = s.recvfrom(65535)
            assert data == p
            assert frm in (("127.0.0.1", echo_lh.port), ("::1", echo_lh.port)), frm
            lh_addrs.add(frm[0])
        assert len(lh_addrs) == 1, lh_addrs
        cport = s._proxyconn.getsockname()[1]
        relay_port = socket.socket.getpeername(s)[1]  # socksocket's own names the target
    finally:
        s.close()
    assert echo4.payloads() == ip_payloads
    lh_host = lh_addrs.pop()
    lh_echo = echo_lh.v4 if lh_host == "127.0.0.1" else echo_lh.v6
    assert lh_echo.payloads() == lh_payloads
    end = gw.wait_session_end(client_port=cport)
    assert end["command"] == "udp"
    assert end["close_reason"] == "closed"
    assert end["user"] == "alice" and end["rule"] == "alice-udp" and end["decision"] == "pass"
    assert end["bound"] == f"127.0.0.1:{relay_port}"
    total_up = sum(map(len, ip_payloads + lh_payloads))
    assert end["bytes_up"] == total_up and end["bytes_down"] == total_up
    assert end["udp"]["datagrams_up"] == 7 and end["udp"]["datagrams_down"] == 7
    d = dests(end)
    lh_key = (f"127.0.0.1:{echo_lh.port}" if lh_host == "127.0.0.1"
              else f"[::1]:{echo_lh.port}")
    assert set(d) == {f"127.0.0.1:{echo4.port}", lh_key}, d
    assert_flow(d[f"127.0.0.1:{echo4.port}"], ip_payloads, ip_payloads)
    assert_flow(d[lh_key], lh_payloads, lh_payloads, host="localhost")
    dropped(end)


# --------------------------------------------------------------------------------------------
# 2. A raw client: IPv4, IPv6 and domain targets, reply headers byte-exact
# --------------------------------------------------------------------------------------------

def test_raw_client_v4_v6_domain_targets(gw, echo4, echo6, echo_lh):
    ctl, (rep, baddr, bport) = associate(gw)
    assert rep == REP_OK
    assert baddr == "127.0.0.1" and bport != 0
    relay = (baddr, bport)
    u = udp_socket("127.0.0.1")
    try:
        p4 = [os.urandom(n) for n in (0, 33, 1200)]
        for p in p4:
            roundtrip(u, relay, "127.0.0.1", echo4.port, p)
        p6 = [os.urandom(n) for n in (5, 2048)]
        for p in p6:
            roundtrip(u, relay, "::1", echo6.port, p)
        pd = [os.urandom(n) for n in (9, 99)]
        for p in pd:
            u.sendto(udp_header("localhost", echo_lh.port) + p, relay)
            got = recv_dgram(u)
            assert got is not None, "no reply for the datagram to localhost"
            # The reply names the address that sent it (never the name).
            ok = (udp_header("127.0.0.1", echo_lh.port) + p, udp_header("::1", echo_lh.port) + p)
            assert got in ok, got
        assert_quiet(u)
    finally:
        u.close()
    assert echo4.payloads() == p4
    assert echo6.payloads() == p6
    assert echo_lh.v4.payloads() + echo_lh.v6.payloads() == pd
    lh_key = (f"127.0.0.1:{echo_lh.port}" if echo_lh.v4.payloads()
              else f"[::1]:{echo_lh.port}")
    end = end_of(gw, ctl)
    assert end["command"] == "udp" and end["close_reason"] == "closed"
    assert end["bound"] == f"127.0.0.1:{bport}"
    d = dests(end)
    assert set(d) == {f"127.0.0.1:{echo4.port}", f"[::1]:{echo6.port}", lh_key}, d
    assert_flow(d[f"127.0.0.1:{echo4.port}"], p4, p4)
    assert_flow(d[f"[::1]:{echo6.port}"], p6, p6)
    assert_flow(d[lh_key], pd, pd, host="localhost")
    n = len(p4) + len(p6) + len(pd)
    assert end["udp"]["datagrams_up"] == n and end["udp"]["datagrams_down"] == n
    assert end["bytes_up"] == end["bytes_down"] == sum(map(len, p4 + p6 + pd))
    dropped(end)


def test_raw_client_over_ipv6_listener(gw, echo4, echo6):
    ctl, (rep, baddr, bport) = associate(gw, listener="main6", dst=("::", 0))
    assert rep == REP_OK
    assert baddr == "::1" and bport != 0
    relay = (baddr, bport)
    u = udp_socket("::1")
    try:
        p6 = [os.urandom(n) for n in (1, 1500)]
        for p in p6:
            roundtrip(u, relay, "::1", echo6.port, p)
        p4 = [os.urandom(40)]
        for p in p4:
            roundtrip(u, relay, "127.0.0.1", echo4.port, p)
    finally:
        u.close()
    end = end_of(gw, ctl)
    assert end["listener"] == "main6" and end["command"] == "udp"
    assert end["bound"] == f"[::1]:{bport}"
    d = dests(end)
    assert set(d) == {f"[::1]:{echo6.port}", f"127.0.0.1:{echo4.port}"}, d
    assert_flow(d[f"[::1]:{echo6.port}"], p6, p6)
    assert_flow(d[f"127.0.0.1:{echo4.port}"], p4, p4)
    dropped(end)


# --------------------------------------------------------------------------------------------
# 3. Only the association's client
# --------------------------------------------------------------------------------------------

def test_foreign_sources_dropped(gw, echo4):
    ctl, (rep, baddr, bport) = associate(gw)
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    other_ip = udp_socket("127.0.0.2")
    same_ip = udp_socket("127.0.0.1")
    try:
        # Before the client's port is known: another IP is not the client.
        f1 = b"foreign-before-" + os.urandom(8)
        other_ip.sendto(udp_header("127.0.0.1", echo4.port) + f1, relay)
        good1 = b"good-1-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good1)
        # After: another IP, and the client's IP from another port.
        f2 = b"foreign-ip-" + os.urandom(8)
        other_ip.sendto(udp_header("127.0.0.1", echo4.port) + f2, relay)
        f3 = b"foreign-port-" + os.urandom(8)
        same_ip.sendto(udp_header("127.0.0.1", echo4.port) + f3, relay)
        good2 = b"good-2-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good2)
        assert_quiet(u)
        assert_quiet(other_ip, 0.05)
        assert_quiet(same_ip, 0.05)
    finally:
        for x in (u, other_ip, same_ip):
            x.close()
    assert echo4.payloads() == [good1, good2], "the echo server saw only the client's datagrams"
    end = end_of(gw, ctl)
    dropped(end, foreign_source=3)
    assert end["udp"]["datagrams_up"] == 2 and end["udp"]["datagrams_down"] == 2
    assert_flow(dests(end)[f"127.0.0.1:{echo4.port}"], [good1, good2], [good1, good2])


def test_request_naming_client_port_pins_it(gw, echo4):
    u = udp_socket("127.0.0.1")
    same_ip = udp_socket("127.0.0.1")
    ctl, (rep, _, bport) = associate(gw, dst=("127.0.0.1", local_port(u)))
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    try:
        # The request named u's port: another port of the same IP is foreign from the start.
        f = b"foreign-" + os.urandom(8)
        same_ip.sendto(udp_header("127.0.0.1", echo4.port) + f, relay)
        good = b"good-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good)
        assert_quiet(same_ip, 0.1)
    finally:
        u.close()
        same_ip.close()
    assert echo4.payloads() == [good]
    end = end_of(gw, ctl)
    dropped(end, foreign_source=1)


# --------------------------------------------------------------------------------------------
# 4. FRAG != 0 and malformed headers
# --------------------------------------------------------------------------------------------

def test_fragments_and_malformed_dropped(gw, echo4):
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        good1 = b"first-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good1)
        frag1 = b"frag1-" + os.urandom(8)
        u.sendto(udp_header("127.0.0.1", echo4.port, frag=1) + frag1, relay)
        frag2 = b"frag2-" + os.urandom(8)
        u.sendto(udp_header("127.0.0.1", echo4.port, frag=0x81) + frag2, relay)
        u.sendto(b"\x00\x00\x00", relay)  # shorter than any header
        u.sendto(b"\x00\x00\x00\x01\x7f\x00", relay)  # IPv4 cut short
        u.sendto(b"\x00\x00\x00\x09" + os.urandom(8), relay)  # unknown ATYP
        good2 = b"after-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good2)
        assert_quiet(u)
    finally:
        u.close()
    assert echo4.payloads() == [good1, good2]
    end = end_of(gw, ctl)
    dropped(end, fragmented=2, malformed=3)
    assert end["udp"]["datagrams_up"] == 2


# --------------------------------------------------------------------------------------------
# 5. The association ends with its control connection
# --------------------------------------------------------------------------------------------

def test_association_ends_with_control_connection(gw, echo4):
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    cport = local_port(ctl)
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        p = os.urandom(64)
        roundtrip(u, relay, "127.0.0.1", echo4.port, p)
        t0 = time.monotonic()
        ctl.close()
        end = gw.wait_session_end(client_port=cport, timeout=1.0)
        took = time.monotonic() - t0
        assert took <= 1.0, took
        assert end["close_reason"] == "closed" and end["command"] == "udp"
        assert end["phase"] == "relay"
        # The relay port is gone: a datagram to it is answered by ICMP port unreachable.
        late = b"late-" + os.urandom(8)
        u.connect(relay)
        u.send(udp_header("127.0.0.1", echo4.port) + late)
        r, _, _ = select.select([u], [], [], 2.0)
        assert r, "neither an echo nor an ICMP error: is the relay port still open?"
        with pytest.raises(ConnectionRefusedError):
            u.recv(65535)
        time.sleep(0.1)
    finally:
        u.close()
    assert echo4.payloads() == [p], "nothing is relayed after the association ended"
    assert end["udp"]["datagrams_up"] == 1


def test_association_ends_on_shutdown(gateway_factory, echo4):
    cfg = udp_config()
    cfg["limits"]["drain_timeout_s"] = 1
    gw = gateway_factory(config=cfg, policy=udp_policy())
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    cport = local_port(ctl)
    u = udp_socket("127.0.0.1")
    try:
        roundtrip(u, ("127.0.0.1", bport), "127.0.0.1", echo4.port, b"before")
        gw.stop(timeout=10)
    finally:
        u.close()
    end = [r for r in gw.session_ends() if r.get("client_port") == cport]
    assert len(end) == 1, gw.audit()
    assert end[0]["close_reason"] == "shutdown" and end[0]["command"] == "udp"
    assert end[0]["udp"]["datagrams_up"] == 1
    assert wait_closed(ctl, timeout=3)[0] in ("eof", "reset")
    ctl.close()


def test_large_datagrams_intact(gw, echo4):
    """The biggest datagrams an IPv4 client can exchange go through whole, both ways; a
    datagram is never cut."""
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sizes = (65000, 65400, 65497)  # 65497 + 10-byte header = 65507, the IPv4 maximum
    try:
        for n in sizes:
            p = os.urandom(n)
            u.sendto(udp_header("127.0.0.1", echo4.port) + p, relay)
            got = recv_dgram(u)
            assert got is not None, f"no reply for a {n}-byte payload"
            want = udp_header("127.0.0.1", echo4.port) + p
            assert got == want, f"{n}-byte payload came back as {len(got) - 10} bytes " \
                                f"(header {got[:10].hex()})"
    except BaseException:
        ctl.close()  # do not leave the association to the drain at teardown
        raise
    finally:
        u.close()
    assert [len(x) for x in echo4.payloads()] == list(sizes)
    end = end_of(gw, ctl)
    assert end["bytes_up"] == end["bytes_down"] == sum(sizes)
    dropped(end)


# --------------------------------------------------------------------------------------------
# 6. Policy per destination
# --------------------------------------------------------------------------------------------

def test_denied_destination_dropped_and_audited_once(gateway_factory, echo4):
    gw = gateway_factory(config=udp_config(), policy=udp_policy(to=["127.0.0.1/32"]))
    denied_echo = UdpEcho("127.0.0.3")
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    cport = local_port(ctl)
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        d1, d2 = b"denied-1-" + os.urandom(8), b"denied-2-" + os.urandom(8)
        u.sendto(udp_header("127.0.0.3", denied_echo.port) + d1, relay)
        u.sendto(udp_header("127.0.0.3", denied_echo.port) + d2, relay)
        good = b"good-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good)
        assert_quiet(u)
    finally:
        u.close()
        time.sleep(0.05)
        denied_echo.close()
    assert denied_echo.payloads() == [], "a denied destination never gets a datagram"
    assert echo4.payloads() == [good]
    end = end_of(gw, ctl)
    dropped(end, denied=2)
    assert set(dests(end)) == {f"127.0.0.1:{echo4.port}"}, end
    recs = [r for r in gw.audit() if r.get("event") == "denied" and r.get("client_port") == cport]
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["stage"] == "udp_destination"
    assert rec["host"] == "127.0.0.3" and rec["port"] == denied_echo.port
    assert rec["rule"] == "deny-rest" and rec["decision"] == "block"
    assert rec["reason"], rec
    assert rec["user"] == "alice" and rec["command"] == "udp"


def test_denied_name_dropped_and_audited_once(gateway_factory, echo_lh):
    """A name whose every address is denied: dropped, one denied record naming the host."""
    gw = gateway_factory(config=udp_config(), policy=udp_policy(to=["127.0.0.2/32"]))
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    cport = local_port(ctl)
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    allowed = UdpEcho("127.0.0.2")
    try:
        for i in range(2):
            u.sendto(udp_header("localhost", echo_lh.port) + b"denied-%d" % i, relay)
        good = os.urandom(12)
        roundtrip(u, relay, "127.0.0.2", allowed.port, good)
        assert_quiet(u)
    finally:
        u.close()
        allowed.close()
    assert echo_lh.v4.payloads() == [] and echo_lh.v6.payloads() == []
    end = end_of(gw, ctl)
    dropped(end, denied=2)
    recs = [r for r in gw.audit() if r.get("event") == "denied" and r.get("client_port") == cport]
    assert len(recs) == 1, recs
    assert recs[0]["stage"] == "udp_destination"
    assert recs[0]["host"] == "localhost" and recs[0]["port"] == echo_lh.port
    assert recs[0]["rule"] == "deny-rest"


def test_udp_rule_with_ports_grants_association_and_denies_other_ports(gateway_factory, echo4):
    """A udp rule restricted to some ports still allows the association (the destination port
    is only known per datagram), and datagrams to other ports are denied."""
    gw = gateway_factory(config=udp_config(),
                         policy=udp_policy(to=["127.0.0.0/8"], ports=["1024-65535"]))
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK, f"UDP ASSOCIATE answered REP {rep} though alice-udp allows " \
                          f"127.0.0.0/8 ports 1024-65535: {gw.audit()}"
    cport = local_port(ctl)
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        u.sendto(udp_header("127.0.0.1", 9) + b"discard", relay)
        good = os.urandom(16)
        roundtrip(u, relay, "127.0.0.1", echo4.port, good)
    finally:
        u.close()
    end = end_of(gw, ctl)
    dropped(end, denied=1)
    recs = gw.wait_audit(lambda r: r.get("event") == "denied" and r.get("client_port") == cport)
    assert len(recs) == 1 and recs[0]["stage"] == "udp_destination" and recs[0]["port"] == 9


def test_udp_rule_naming_only_a_host_grants_association(gateway_factory, echo_lh, echo4):
    """A udp rule whose "to" is only a host name: the association is granted, datagrams to that
    name pass, the same address sent as an IP does not (the rule names the host, not it)."""
    gw = gateway_factory(config=udp_config(), policy=udp_policy(to=["localhost"]))
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK, f"UDP ASSOCIATE answered REP {rep} though alice-udp allows " \
                          f"\"localhost\": {gw.audit()}"
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        p = os.urandom(20)
        u.sendto(udp_header("localhost", echo_lh.port) + p, relay)
        got = recv_dgram(u)
        assert got in (udp_header("127.0.0.1", echo_lh.port) + p,
                       udp_header("::1", echo_lh.port) + p), got
        u.sendto(udp_header("127.0.0.1", echo4.port) + b"by-ip", relay)
        assert_quiet(u)
    finally:
        u.close()
    assert echo4.payloads() == []
    end = end_of(gw, ctl)
    dropped(end, denied=1)


# --------------------------------------------------------------------------------------------
# 7. No udp rule
# --------------------------------------------------------------------------------------------

def test_udp_associate_without_udp_rule_denied(gateway_factory):
    gw = gateway_factory(config=udp_config(), policy=default_policy())
    ctl, (rep, _, _) = associate(gw)
    cport = local_port(ctl)
    assert rep == REP_NOT_ALLOWED
    assert wait_closed(ctl)[0] in ("eof", "reset")
    ctl.close()
    end = gw.wait_session_end(client_port=cport)
    assert end["command"] == "udp"
    assert end["close_reason"] == "policy_denied"
    assert end["decision"] == "block" and end["rule"] == "deny-rest"
    assert "udp" not in end, "no association, no udp summary"
    denied = gw.wait_audit(lambda r: r.get("event") == "denied" and r["client_port"] == cport)
    assert len(denied) == 1 and denied[0]["stage"] == "request"
    assert denied[0]["command"] == "udp"


# --------------------------------------------------------------------------------------------
# 8. Rate cap
# --------------------------------------------------------------------------------------------

def test_datagram_rate_cap(gateway_factory, echo4):
    rate = 50
    gw = gateway_factory(config=udp_config(max_datagrams_per_s=rate), policy=udp_policy())
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    n = 500
    try:
        hdr = udp_header("127.0.0.1", echo4.port)
        t0 = time.monotonic()
        for i in range(n):
            u.sendto(hdr + struct.pack(">I", i) + b"x" * 60, relay)
        blast = time.monotonic() - t0
        assert blast < 0.2, f"the blast itself took {blast:.3f}s"
        echoed = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            got = recv_dgram(u, max(0.0, deadline - time.monotonic()))
            if got is None:
                break
            echoed.append(got)
    finally:
        u.close()
    seen = echo4.times()
    assert seen, "some datagrams pass"
    # A full bucket (rate) plus what refills while the gateway works through the queue.
    window = seen[-1] - seen[0]
    bound = rate + rate * window + 2
    assert len(seen) <= bound, f"{len(seen)} datagrams passed in {window:.3f}s, cap {rate}/s"
    assert len(seen) <= 2 * rate, len(seen)
    assert len(seen) >= rate * 0.8, f"only {len(seen)} passed; the bucket starts full"
    assert len(echoed) <= len(seen)
    end = end_of(gw, ctl)
    dr = end["udp"]["dropped"]
    assert dr["rate"] > 0, end
    assert end["udp"]["datagrams_up"] == len(seen)
    assert end["udp"]["datagrams_up"] + dr["rate"] <= n
    assert end["udp"]["datagrams_down"] == len(echoed)


def test_reply_rate_cap_no_amplification(gateway_factory):
    """A server answering one datagram with 300: the client gets at most the downstream cap."""
    rate = 50
    gw = gateway_factory(config=udp_config(max_datagrams_per_s=rate), policy=udp_policy())
    amp = UdpEcho("127.0.0.1", copies=300)
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    u = udp_socket("127.0.0.1")
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    got = []
    try:
        u.sendto(udp_header("127.0.0.1", amp.port) + b"ping", ("127.0.0.1", bport))
        t0 = time.monotonic()
        while True:
            d = recv_dgram(u, 0.5)
            if d is None:
                break
            got.append(d)
        took = time.monotonic() - t0
    finally:
        u.close()
        amp.close()
    assert got, "replies pass"
    assert len(got) <= rate + rate * took + 2, f"{len(got)} replies in {took:.2f}s"
    assert len(got) <= 2 * rate, len(got)
    end = end_of(gw, ctl)
    assert end["udp"]["datagrams_up"] == 1
    assert end["udp"]["datagrams_down"] == len(got)
    assert end["udp"]["dropped"]["rate"] > 0
    assert end["udp"]["datagrams_down"] + end["udp"]["dropped"]["rate"] <= 300


def test_byte_rate_cap(gateway_factory, echo4):
    cap = 10000
    gw = gateway_factory(config=udp_config(max_bytes_per_s=cap), policy=udp_policy())
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    u = udp_socket("127.0.0.1")
    try:
        hdr = udp_header("127.0.0.1", echo4.port)
        for i in range(40):
            u.sendto(hdr + struct.pack(">I", i) + b"b" * 996, ("127.0.0.1", bport))
        while recv_dgram(u, 0.5) is not None:
            pass
    finally:
        u.close()
    seen = echo4.times()
    assert seen, "some datagrams pass"
    window = seen[-1] - seen[0]
    assert len(seen) * 1000 <= cap + cap * window + 2000, \
        f"{len(seen)} KB passed in {window:.3f}s with a cap of {cap} B/s"
    end = end_of(gw, ctl)
    assert end["udp"]["dropped"]["rate"] > 0
    assert end["bytes_up"] == len(seen) * 1000


def test_max_destinations(gateway_factory):
    gw = gateway_factory(config=udp_config(max_destinations=2), policy=udp_policy())
    echoes = [UdpEcho("127.0.0.1") for _ in range(3)]
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        roundtrip(u, relay, "127.0.0.1", echoes[0].port, b"one")
        roundtrip(u, relay, "127.0.0.1", echoes[1].port, b"two")
        u.sendto(udp_header("127.0.0.1", echoes[2].port) + b"three", relay)
        roundtrip(u, relay, "127.0.0.1", echoes[0].port, b"one-again")
        assert_quiet(u)
    finally:
        u.close()
        for e in echoes:
            e.close()
    assert echoes[2].payloads() == [], "a destination over the cap gets nothing"
    end = end_of(gw, ctl)
    assert set(dests(end)) == {f"127.0.0.1:{echoes[0].port}", f"127.0.0.1:{echoes[1].port}"}
    dropped(end, destinations=1)


# --------------------------------------------------------------------------------------------
# 9. udp_advertise
# --------------------------------------------------------------------------------------------

def test_udp_advertise(gateway_factory, echo4):
    cfg = udp_config()
    cfg["listeners"][0]["udp_advertise"] = "127.0.0.9"
    gw = gateway_factory(config=cfg, policy=udp_policy())
    ctl, (rep, baddr, bport) = associate(gw)
    assert rep == REP_OK
    assert baddr == "127.0.0.9", baddr
    u = udp_socket("127.0.0.1")
    try:
        p = os.urandom(100)
        roundtrip(u, ("127.0.0.1", bport), "127.0.0.1", echo4.port, p)
    finally:
        u.close()
    end = end_of(gw, ctl)
    assert end["bound"] in (f"127.0.0.9:{bport}", f"127.0.0.1:{bport}"), end
    assert end["udp"]["datagrams_up"] == 1 and end["udp"]["datagrams_down"] == 1


# --------------------------------------------------------------------------------------------
# 10. Idle timeout
# --------------------------------------------------------------------------------------------

def test_idle_timeout(gateway_factory, echo4):
    gw = gateway_factory(config=udp_config(idle_timeout_s=1), policy=udp_policy())
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    cport = local_port(ctl)
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    try:
        # Traffic keeps it alive past the timeout...
        t_start = time.monotonic()
        while time.monotonic() - t_start < 1.6:
            roundtrip(u, relay, "127.0.0.1", echo4.port, os.urandom(8))
            time.sleep(0.3)
        assert not [r for r in gw.session_ends() if r.get("client_port") == cport], \
            "ended although datagrams kept flowing"
        # ...silence ends it.
        t0 = time.monotonic()
        end = gw.wait_session_end(client_port=cport, timeout=4.0)
        took = time.monotonic() - t0
        assert end["close_reason"] == "idle_timeout"
        assert 0.5 <= took <= 3.0, took
        assert wait_closed(ctl, timeout=3.0)[0] in ("eof", "reset")
    finally:
        u.close()
        ctl.close()


# --------------------------------------------------------------------------------------------
# 11. Unsolicited "replies"
# --------------------------------------------------------------------------------------------

def test_unsolicited_replies_dropped(gw):
    other = UdpEcho("127.0.0.1", reply_from_other=True)
    honest = UdpEcho("127.0.0.1")
    ctl, (rep, _, bport) = associate(gw)
    assert rep == REP_OK
    relay = ("127.0.0.1", bport)
    u = udp_socket("127.0.0.1")
    third = udp_socket("127.0.0.1")
    try:
        p1 = b"to-other-" + os.urandom(8)
        u.sendto(udp_header("127.0.0.1", other.port) + p1, relay)
        assert_quiet(u)
        assert other.payloads() == [p1], "the datagram reached the server"
        # A third party that knows the gateway's outbound port.
        p2 = b"honest-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", honest.port, p2)
        out_ep = honest.senders()[0]
        third.sendto(b"spoof-" + os.urandom(8), out_ep)
        assert_quiet(u)
        p3 = b"honest-2-" + os.urandom(8)
        roundtrip(u, relay, "127.0.0.1", honest.port, p3)
    finally:
        u.close()
        third.close()
        other.close()
        honest.close()
    end = end_of(gw, ctl)
    dropped(end, unsolicited=2)
    d = dests(end)
    assert_flow(d[f"127.0.0.1:{other.port}"], [p1], [])
    assert_flow(d[f"127.0.0.1:{honest.port}"], [p2, p3], [p2, p3])
    assert end["udp"]["datagrams_down"] == 2
