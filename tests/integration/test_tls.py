"""TLS listeners: implicit TLS then SOCKS5 inside, protocol policy, client certificates,
reloads. Real OpenSSL on both sides (Python's ssl, openssl s_client, stunnel, curl)."""

import hashlib
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from sgtest import (IO_TIMEOUT, SocksError, connect_tcp, default_config, default_policy,
                    greeting, recv_all, recv_exact, tcp_info, wait_closed)
from tlstest import (Pki, Stunnel, client_context, tls_connect, tls_listener,
                     tls_socks_connect)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.alice = p.user("alice")
    p.bob = p.user("bob")
    p.carol = p.user("carol")  # valid, but no rule names her
    p.expired = p.user("alice-old", "--email", "alice@example.test", "--expired")
    p.server_eku = p.user("alice-srv", "--email", "alice@example.test", "--server-eku")
    return p


def tls_config(pki, *listeners, **limits):
    cfg = default_config(**limits)
    cfg["listeners"] = list(listeners) or [tls_listener(pki)]
    return cfg


def fetch(sock, http_server) -> bytes:
    sock.sendall(f"GET {http_server.path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = recv_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head[:100]
    return body


def test_socks5_inside_tls_verified_by_python_ssl(gateway_factory, pki, http_server):
    gw = gateway_factory(config=tls_config(pki))
    ctx = client_context(pki)
    s, bound = tls_socks_connect(gw.addr("tls"), ctx, "alice", gw.passwords["alice"],
                                 "127.0.0.1", http_server.port)
    with s:
        version = s.version()
        assert version in ("TLSv1.3", "TLSv1.2")
        assert bound[0] == "127.0.0.1"
        body = fetch(s, http_server)
    assert hashlib.sha256(body).hexdigest() == http_server.sha256
    rec = gw.wait_session_end(user="alice")
    assert rec["close_reason"] == "closed"
    assert rec["tls_version"] == version
    assert rec["tls_cipher"]
    assert rec["tls_sni"] == "localhost"
    assert rec["tls_resumed"] is False
    assert rec["method"] == "userpass"
    assert "cert_subject" not in rec


def test_curl_through_stunnel_fetches_a_file(gateway_factory, pki, http_server, tmp_path):
    gw = gateway_factory(config=tls_config(pki))
    tunnel = Stunnel(tmp_path / "stunnel", gw.addr("tls"), pki.ca)
    try:
        out = tmp_path / "file.bin"
        res = subprocess.run(
            ["curl", "-sS", "--fail", "--max-time", "30", "--socks5-hostname",
             f"127.0.0.1:{tunnel.port}", "--proxy-user", f"alice:{gw.passwords['alice']}",
             "-o", str(out), http_server.url("localhost")],
            capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == http_server.sha256
    finally:
        tunnel.close()
    rec = gw.wait_session_end(user="alice")
    assert rec["host"] == "localhost" and rec["tls_version"]
    assert rec["bytes_down"] > len(http_server.body)


def socket_counters(local: int, remote: int) -> dict[str, int]:
    """bytes_sent and data_segs_out of the established loopback socket local -> remote."""
    fields = dict(f.split(":", 1) for f in tcp_info(local, remote) if f.count(":") == 1)
    return {k: int(fields[k]) for k in ("bytes_sent", "data_segs_out")}


def test_bulk_download_fills_segments_and_sends_every_tail(gateway_factory, pki, target):
    """Records of one burst leave with MSG_MORE, all but the last: the client's socket gets
    full segments instead of one per 16 KiB record, and the end of each burst is pushed at
    once — checked with bursts that are followed by silence until the client answers."""
    gw = gateway_factory(config=tls_config(pki))
    s, _ = tls_socks_connect(gw.addr("tls"), client_context(pki), "alice", gw.passwords["alice"],
                             "127.0.0.1", target.port)
    conn, _ = target.accept()
    cport = s.getsockname()[1]
    with s, conn:
        # Warm up: a few MiB grow both legs' windows, so that the target's kernel sends each
        # burst below as one segment instead of pushing at half a small window.
        warm = os.urandom(4 << 20)
        conn.sendall(warm)
        assert recv_exact(s, len(warm)) == warm
        before = socket_counters(gw.port("tls"), cport)
        # Bursts of 60 KiB: one loopback segment from the target, so the gateway reads each
        # whole, and four records that fit one segment to the client. The client drains each
        # before the next starts, so nothing queues up in the gateway's socket (a full socket
        # buffer would merge records by itself). Then sizes that end on, just past and just
        # short of a record, and a burst of several segments.
        sizes = [60 * 1024] * 64 + [16384, 16385, 16383, 100_001, 1, 1 << 20]
        for size in sizes:
            data = os.urandom(size)
            conn.sendall(data)
            assert recv_exact(s, size) == data, f"burst of {size} bytes arrives whole"
            s.sendall(b"k")
            assert recv_exact(conn, 1) == b"k"
        after = socket_counters(gw.port("tls"), cport)
    sent = after["bytes_sent"] - before["bytes_sent"]
    segs = after["data_segs_out"] - before["data_segs_out"]
    assert sent > sum(sizes)
    # One segment per record averages ~16.5 KiB here; corked, a 60 KiB burst is one segment
    # (50-57 KiB on average with the larger bursts, on an idle or a loaded machine).
    assert sent / segs > 32 * 1024, f"{segs} segments for {sent} bytes"
    end = gw.wait_session_end(client_port=cport)
    assert end["bytes_down"] == len(warm) + sum(sizes)


def test_plaintext_socks_greeting_gets_no_socks_answer(gateway_factory, pki):
    gw = gateway_factory(config=tls_config(pki))
    with connect_tcp(gw.addr("tls")) as s:
        s.sendall(greeting((0x00, 0x02)))
        how, data = wait_closed(s)
    assert not data.startswith(b"\x05"), data
    rec = gw.wait_session_end(close_reason="tls_handshake_failed")
    assert rec["phase"] == "tls_handshake"
    assert rec["tls_error"] == "plaintext SOCKS on a TLS listener"


def test_handshake_deadline(gateway_factory, pki):
    gw = gateway_factory(config=tls_config(pki, tls_listener(pki, handshake_timeout_ms=300)))
    with connect_tcp(gw.addr("tls")) as s:
        how, data = wait_closed(s, timeout=5)
    assert data == b""
    rec = gw.wait_session_end(close_reason="tls_handshake_timeout")
    assert rec["phase"] == "tls_handshake"


def s_client(addr, *args, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{addr[0]}:{addr[1]}", "-servername", "localhost",
         *args], input=stdin, capture_output=True, timeout=30)


def handshake_ok(res: subprocess.CompletedProcess) -> bool:
    out = res.stdout.decode(errors="replace")
    return "Cipher is (NONE)" not in out and ", Cipher is " in out


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_old_protocol_versions_refused(gateway_factory, pki, version):
    gw = gateway_factory(config=tls_config(pki))
    # SECLEVEL=0 so that the probe really offers the old version.
    res = s_client(gw.addr("tls"), version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert not handshake_ok(res), res.stdout
    assert b"alert protocol version" in res.stderr or b"no protocols available" in res.stderr


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256",
                                    "ECDHE-ECDSA-AES256-SHA384"])
def test_tls12_cipher_outside_the_intermediate_list_refused(gateway_factory, pki, cipher):
    gw = gateway_factory(config=tls_config(pki))
    res = s_client(gw.addr("tls"), "-tls1_2", "-cipher", cipher)
    assert not handshake_ok(res), res.stdout
    # The listed suites work with the same tool, so the refusal is about the suite.
    ok = s_client(gw.addr("tls"), "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert handshake_ok(ok), ok.stderr


def test_renegotiation_refused(gateway_factory, pki):
    gw = gateway_factory(config=tls_config(pki))
    res = subprocess.run(
        f"(echo R; sleep 2) | openssl s_client -connect {gw.addr('tls')[0]}:"
        f"{gw.addr('tls')[1]} -tls1_2 -CAfile {pki.ca}", shell=True, capture_output=True,
        timeout=30)
    assert b"RENEGOTIATING" in res.stdout + res.stderr, res.stdout
    assert b"no renegotiation" in res.stderr, res.stderr
    rec = gw.wait_session_end(close_reason="tls_error")
    assert rec["tls_version"] == "TLSv1.2"


def test_modern_profile_is_tls13_only(gateway_factory, pki):
    gw = gateway_factory(config=tls_config(pki, tls_listener(pki, profile="modern")))
    res = s_client(gw.addr("tls"), "-tls1_2")
    assert not handshake_ok(res)
    ok = s_client(gw.addr("tls"), "-tls1_3")
    assert handshake_ok(ok)


def test_session_resumption_with_tickets(gateway_factory, pki, echo_server):
    gw = gateway_factory(config=tls_config(pki))
    ctx = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
    first = tls_connect(gw.addr("tls"), ctx)
    session = first.session
    first.close()
    second = tls_connect(gw.addr("tls"), ctx, session=session)
    assert second.session_reused
    second.close()
    # TLS 1.3 tickets arrive after the handshake: read something first.
    ctx13 = client_context(pki, minimum=ssl.TLSVersion.TLSv1_3)
    s, _ = tls_socks_connect(gw.addr("tls"), ctx13, "alice", gw.passwords["alice"],
                             "127.0.0.1", echo_server.port)
    session = s.session
    s.close()
    s, _ = tls_socks_connect(gw.addr("tls"), ctx13, "alice", gw.passwords["alice"],
                             "127.0.0.1", echo_server.port, session=session)
    assert s.session_reused
    s.close()
    recs = gw.wait_audit(lambda r: r.get("event") == "session_end" and r.get("user") == "alice",
                         count=2)
    assert [r["tls_resumed"] for r in recs] == [False, True]


# --- client certificates ----------------------------------------------------------------------

def cert_policy():
    p = default_policy()
    p["rules"] = [
        {"id": "alice-cert", "action": "pass", "users": ["alice@example.test"],
         "methods": ["certificate"], "to": ["127.0.0.0/8"], "ports": ["1024-65535"]},
        {"id": "bob-cert", "action": "pass", "users": ["bob@example.test"],
         "methods": ["certificate"], "to": ["127.0.0.0/8"], "ports": ["1024-65535"]},
        {"id": "alice-cert-and-password", "action": "pass", "users": ["alice"],
         "methods": ["userpass"], "client_certificate": True, "to": ["127.0.0.0/8"]},
        {"id": "deny-rest", "action": "block"},
    ]
    return p


def try_cert_session(gw, pki, cert, echo_server, listener="tls"):
    ctx = client_context(pki, cert=cert)
    s, _ = tls_socks_connect(gw.addr(listener), ctx, None, None, "127.0.0.1", echo_server.port)
    with s:
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"


def refused(fn) -> str:
    try:
        fn()
    except (ssl.SSLError, SocksError, ConnectionError, OSError, EOFError) as e:
        return type(e).__name__ + ": " + str(e)
    return ""


def test_client_certificate_matrix(gateway_factory, pki, echo_server, tmp_path):
    other = Pki(tmp_path / "other-ca")
    stranger = other.user("alice")  # right name, wrong CA
    listener = tls_listener(pki, methods=("none",),
                            client_cert={"mode": "required", "identity": "email"})
    gw = gateway_factory(config=tls_config(pki, listener), policy=cert_policy())

    try_cert_session(gw, pki, pki.alice, echo_server)
    rec = gw.wait_session_end(user="alice@example.test")
    assert rec["method"] == "certificate" and rec["rule"] == "alice-cert"
    assert rec["cert_subject"] == "CN=alice"
    assert rec["cert_user"] == "alice@example.test"
    der = ssl.PEM_cert_to_DER_cert(pki.alice[0].read_text())
    assert rec["cert_sha256"] == hashlib.sha256(der).hexdigest()

    assert refused(lambda: try_cert_session(gw, pki, None, echo_server))
    assert refused(lambda: try_cert_session(gw, pki, pki.expired, echo_server))
    assert refused(lambda: try_cert_session(gw, pki, stranger, echo_server))
    assert refused(lambda: try_cert_session(gw, pki, pki.server_eku, echo_server))
    # carol's certificate is fine, but no rule names her: REP 02.
    why = refused(lambda: try_cert_session(gw, pki, pki.carol, echo_server))
    assert "reply" in why and "2" in why, why

    failed = gw.wait_audit(lambda r: r.get("close_reason") == "tls_handshake_failed", count=4)
    errors = [r.get("tls_error", "") for r in failed]
    assert any("expired" in e for e in errors), errors
    assert any("unsuitable certificate purpose" in e for e in errors), errors
    assert any("unable to get local issuer" in e for e in errors), errors
    passed = [r for r in gw.session_ends() if r.get("decision") == "pass"]
    assert [r["user"] for r in passed] == ["alice@example.test"]
    denied = gw.wait_session_end(close_reason="policy_denied")
    assert denied["user"] == "carol@example.test"


@pytest.mark.parametrize("depth,zoe_ok", [(0, False), (1, True)])
def test_client_certificate_chain_depth(gateway_factory, pki, echo_server, depth, zoe_ok):
    """client_cert.depth bounds the chain a client certificate may need: zoe's certificate comes
    from an intermediate CA (leaf -> dept -> root, sent along by the client), alice's straight
    from the root."""
    dept = pki.intermediate(f"dept{depth}")
    zoe = dept.user("zoe")
    pol = cert_policy()
    pol["rules"].insert(0, {"id": "zoe-cert", "action": "pass", "users": ["zoe@example.test"],
                            "methods": ["certificate"], "to": ["127.0.0.0/8"]})
    listener = tls_listener(pki, methods=("none",),
                            client_cert={"mode": "required", "identity": "email",
                                         "depth": depth, "crl": str(dept.crl)})
    gw = gateway_factory(config=tls_config(pki, listener), policy=pol)
    try_cert_session(gw, pki, pki.alice, echo_server)
    if zoe_ok:
        try_cert_session(gw, pki, zoe, echo_server)
        assert gw.wait_session_end(user="zoe@example.test")["rule"] == "zoe-cert"
    else:
        assert refused(lambda: try_cert_session(gw, pki, zoe, echo_server))
        rec = gw.wait_audit(lambda r: r.get("close_reason") == "tls_handshake_failed")[0]
        assert "too long" in rec["tls_error"], rec


def test_revocation_takes_effect_on_crl_reload(gateway_factory, pki, echo_server, tmp_path):
    local = Pki(tmp_path / "ca")
    dave = local.user("dave")
    pol = cert_policy()
    pol["rules"].insert(0, {"id": "dave", "action": "pass", "users": ["dave@example.test"],
                            "to": ["127.0.0.0/8"]})
    listener = tls_listener(local, methods=("none",),
                            client_cert={"mode": "required", "identity": "email"})
    gw = gateway_factory(config=tls_config(local, listener), policy=pol)
    ctx = client_context(local, cert=dave, maximum=ssl.TLSVersion.TLSv1_2)
    first = tls_connect(gw.addr("tls"), ctx)
    session = first.session
    first.close()
    try_cert_session(gw, local, dave, echo_server)
    local.revoke("dave")
    ok, line = gw.reload()
    assert ok, line
    assert refused(lambda: try_cert_session(gw, local, dave, echo_server))
    # Nor can an old ticket bring the revoked certificate back.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, SocksError, EOFError)):
        s = tls_connect(gw.addr("tls"), ctx, session=session)
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\x00"
    # The plain handshake and the resumed one are both refused as revoked.
    gw.wait_audit(lambda r: "revoked" in r.get("tls_error", ""), count=2)


def test_certificate_and_password_together(gateway_factory, pki, echo_server):
    listener = tls_listener(pki, methods=("userpass",),
                            client_cert={"mode": "optional", "identity": "cn"})
    gw = gateway_factory(config=tls_config(pki, listener), policy=cert_policy())
    pw = gw.passwords["alice"]
    s, _ = tls_socks_connect(gw.addr("tls"), client_context(pki, cert=pki.alice), "alice", pw,
                             "127.0.0.1", echo_server.port)
    s.close()
    rec = gw.wait_session_end(user="alice")
    assert rec["rule"] == "alice-cert-and-password" and rec["cert_user"] == "alice"
    # The password alone is not enough for that rule.
    with pytest.raises(SocksError) as e:
        tls_socks_connect(gw.addr("tls"), client_context(pki), "alice", pw, "127.0.0.1",
                          echo_server.port)
    assert e.value.stage == "reply" and e.value.data == 2
    # Bob's password with Alice's certificate: refused at authentication.
    with pytest.raises((SocksError, ConnectionError, OSError, EOFError)):
        tls_socks_connect(gw.addr("tls"), client_context(pki, cert=pki.alice), "bob",
                          gw.passwords["bob"], "127.0.0.1", echo_server.port)
    fail = gw.wait_audit(lambda r: r.get("event") == "auth_failure")[0]
    assert fail["reason"] == "certificate_user_mismatch" and fail["cert_user"] == "alice"


def test_certificate_reload_keeps_running_sessions(gateway_factory, pki, echo_server, tmp_path):
    first = Pki(tmp_path / "first")
    cert = first.dir / "live.pem"
    key = first.dir / "live.key"
    shutil.copy(first.server_cert, cert)
    shutil.copy(first.server_key, key)
    first._chown()
    listener = {"name": "tls", "address": "127.0.0.1", "port": 0, "methods": ["userpass"],
                "tls": {"cert": str(cert), "key": str(key)}}
    gw = gateway_factory(config=tls_config(first, listener))
    pw = gw.passwords["alice"]
    running, _ = tls_socks_connect(gw.addr("tls"), client_context(first), "alice", pw,
                                   "127.0.0.1", echo_server.port)
    running.sendall(b"one")
    assert recv_exact(running, 3) == b"one"

    # A key that does not match the certificate: refused, the old pair stays.
    second = Pki(tmp_path / "second")
    shutil.copy(second.server_cert, cert)
    first._chown()
    ok, line = gw.reload()
    assert not ok and "does not match" in line, line
    s, _ = tls_socks_connect(gw.addr("tls"), client_context(first), "alice", pw, "127.0.0.1",
                             echo_server.port)
    s.close()

    # The whole new pair: new handshakes see it, the running session goes on.
    shutil.copy(second.server_key, key)
    first._chown()
    ok, line = gw.reload()
    assert ok, line
    with pytest.raises(ssl.SSLError):
        tls_connect(gw.addr("tls"), client_context(first))
    s, _ = tls_socks_connect(gw.addr("tls"), client_context(second), "alice", pw, "127.0.0.1",
                             echo_server.port)
    s.close()
    running.sendall(b"two")
    assert recv_exact(running, 3) == b"two"
    running.close()


def test_config_errors_name_the_field(gateway_factory, pki, tmp_path):
    import json
    from sgtest import SOCKSGATE_BIN
    cfg = tls_config(pki, tls_listener(pki, profile="ancient",
                                       client_cert={"mode": "sometimes", "ca": "/nonexistent"}))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg, indent=2))
    res = subprocess.run([SOCKSGATE_BIN, "validate", "--config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2
    assert 'unknown profile "ancient"' in res.stderr, res.stderr
    assert 'unknown mode "sometimes"' in res.stderr, res.stderr


# --- UDP in stream (command 0x80) -------------------------------------------------------------

def udp_frame(host: str, port: int, data: bytes, version: int = 1) -> bytes:
    from sgtest import encode_addr
    import struct
    dgram = b"\x00\x00\x00" + encode_addr(host) + struct.pack(">H", port) + data
    return bytes([version]) + struct.pack(">H", len(dgram)) + dgram


def read_frame(s) -> bytes:
    import struct
    head = recv_exact(s, 3)
    assert head[0] == 1, head
    return recv_exact(s, struct.unpack(">H", head[1:])[0])


def test_udp_in_stream_over_tls(gateway_factory, pki):
    from test_udp import UdpEcho, udp_policy
    import struct
    echo = UdpEcho("127.0.0.1")
    gw = gateway_factory(config=tls_config(pki), policy=udp_policy())
    try:
        s, bound = tls_socks_connect(gw.addr("tls"), client_context(pki), "alice",
                                     gw.passwords["alice"], "0.0.0.0", 0, cmd=0x80)
        with s:
            for i in range(50):
                payload = b"dgram-%d-" % i + bytes(range(256)) * (i % 5)
                s.sendall(udp_frame("127.0.0.1", echo.port, payload))
                back = read_frame(s)
                # RSV FRAG ATYP=1 127.0.0.1 PORT DATA: the reply names its sender.
                assert back[:4] == b"\x00\x00\x00\x01"
                assert back[4:8] == socket.inet_aton("127.0.0.1")
                assert struct.unpack(">H", back[8:10])[0] == echo.port
                assert back[10:] == payload
            # A destination policy does not allow is dropped; a frame split across TLS records
            # is reassembled; the stream goes on.
            s.sendall(udp_frame("192.0.2.1", 53, b"denied"))
            frame = udp_frame("127.0.0.1", echo.port, b"x")
            s.sendall(frame[:2])
            s.sendall(frame[2:])
            assert read_frame(s)[10:] == b"x"
        rec = gw.wait_session_end(user="alice")
        assert rec["command"] == "udp" and rec["udp_in_stream"] is True
        assert rec["close_reason"] == "closed"
        assert rec["udp"]["datagrams_up"] == 51 and rec["udp"]["datagrams_down"] == 51
        assert rec["udp"]["dropped"]["denied"] == 1
        assert rec["tls_version"]
    finally:
        echo.close()


def test_udp_in_stream_bad_frame_version_ends_the_session(gateway_factory, pki):
    from test_udp import UdpEcho, udp_policy
    echo = UdpEcho("127.0.0.1")
    gw = gateway_factory(config=tls_config(pki), policy=udp_policy())
    try:
        s, _ = tls_socks_connect(gw.addr("tls"), client_context(pki), "alice",
                                 gw.passwords["alice"], "0.0.0.0", 0, cmd=0x80)
        with s:
            s.sendall(udp_frame("127.0.0.1", echo.port, b"never", version=2))
            how, data = wait_closed(s)
            assert data == b""
        rec = gw.wait_session_end(user="alice")
        assert rec["close_reason"] == "protocol_error"
        assert echo.payloads() == []
    finally:
        echo.close()


def test_udp_in_stream_needs_a_udp_rule(gateway_factory, pki):
    gw = gateway_factory(config=tls_config(pki))  # default policy: alice may only connect
    with pytest.raises(SocksError) as e:
        tls_socks_connect(gw.addr("tls"), client_context(pki), "alice", gw.passwords["alice"],
                          "0.0.0.0", 0, cmd=0x80)
    assert e.value.stage == "reply" and e.value.data == 2
