"""Per-user limits (policy rule key "limits"): concurrent sessions per user and per rule, new
sessions per minute, bandwidth per session and per user (measured by real clients over 5 s),
byte quotas that survive a restart. Every refusal is REP 02, an audit record `denied` with
stage `limit` and reason `limit:<name>`, and a metrics limit hit."""

import json
import os
import socket
import threading
import time

import pytest

from sgtest import (IO_TIMEOUT, SocksError, assert_audit_schema, default_config,
                    socks_connect, wait_closed)
from test_admin import scrape
from tlstest import Pki, tls_listener, tls_socks_connect, client_context

MiB = 1 << 20


def limits_policy(limits: dict, rule_users=("alice",), extra_rules=()) -> dict:
    return {
        "client_rules": [{"id": "lo", "action": "pass", "from": ["127.0.0.0/8", "::1/128"]}],
        "rules": [
            *extra_rules,
            {"id": "limited", "action": "pass", "users": list(rule_users),
             "commands": ["connect"], "to": ["127.0.0.0/8"], "ports": ["1024-65535"],
             "limits": limits},
            {"id": "deny-rest", "action": "block"},
        ],
    }


def limits_config(state_file: str | None = None) -> dict:
    cfg = default_config()
    cfg["admin"] = {"address": "127.0.0.1", "port": 0, "metrics_users": ["alice", "bob"]}
    if state_file:
        cfg["limits"]["state_file"] = state_file
    return cfg


def try_connect(gw, user, port, target=None):
    """(socket, None) on success, (None, REP code) when the request is refused. With `target`
    (the Target listening on `port`) the upstream end is accepted and closed right away, so
    that the session ends when the client closes."""
    try:
        s, _ = socks_connect(gw.addr(), user, gw.passwords[user], "127.0.0.1", port)
        if target is not None:
            target.accept()[0].close()
        return s, None
    except SocksError as e:
        assert e.stage == "reply", e
        return None, e.data


def limit_denials(gw, reason: str, count: int) -> list[dict]:
    recs = gw.wait_audit(lambda r: r.get("event") == "denied" and r.get("reason") == reason,
                         count=count)
    for r in recs:
        assert r["stage"] == "limit" and r["decision"] == "block" and r["rule"] == "limited"
    return recs


def limit_hits(gw, limit: str) -> float:
    m = scrape(gw)
    return m.get("socksgate_limit_hits_total", {}).get(frozenset({("limit", limit)}), 0)


def check_schema(gw):
    assert_audit_schema(gw.audit_lines())


def test_exactly_n_of_n_plus_k_concurrent_sessions_per_user(gateway_factory, target):
    gw = gateway_factory(config=limits_config(), policy=limits_policy({"sessions": 3}),
                         users={"alice": "alice-Secret-1", "bob": "bob-Secret-2"})
    results = [try_connect(gw, "alice", target.port, target) for _ in range(5)]
    ok = [s for s, rep in results if s]
    refused = [rep for s, rep in results if not s]
    assert len(ok) == 3 and refused == [2, 2]
    recs = limit_denials(gw, "limit:user_sessions", 2)
    assert all(r["user"] == "alice" for r in recs)
    assert limit_hits(gw, "user_sessions") == 2
    # One closes: one more may start.
    ok.pop().close()
    gw.wait_audit(lambda r: r.get("event") == "session_end" and r.get("close_reason") == "closed")
    s, rep = try_connect(gw, "alice", target.port, target)
    assert s is not None, rep
    ok.append(s)
    for s in ok:
        s.close()
    ends = gw.wait_audit(lambda r: r.get("event") == "session_end"
                         and r.get("close_reason") == "limit:sessions", count=2)
    assert all(r["rule"] == "limited" for r in ends)
    gw.wait_audit(lambda r: r.get("event") == "session_end"
                  and r.get("close_reason") == "closed", count=4)
    check_schema(gw)


def test_exactly_n_of_n_plus_k_concurrent_sessions_per_rule(gateway_factory, target):
    gw = gateway_factory(config=limits_config(),
                         policy=limits_policy({"sessions_per_rule": 3}, ("alice", "bob")))
    held = []
    for user in ("alice", "bob", "alice"):
        s, rep = try_connect(gw, user, target.port, target)
        assert s is not None, rep
        held.append(s)
    for user in ("bob", "alice"):
        s, rep = try_connect(gw, user, target.port)
        assert s is None and rep == 2
    limit_denials(gw, "limit:rule_sessions", 2)
    assert limit_hits(gw, "rule_sessions") == 2
    for s in held:
        s.close()
    check_schema(gw)


def test_new_sessions_per_minute(gateway_factory, target):
    gw = gateway_factory(config=limits_config(),
                         policy=limits_policy({"new_sessions_per_minute": 3}, ("alice", "bob")))
    outcomes = []
    for _ in range(5):
        s, rep = try_connect(gw, "alice", target.port, target)
        outcomes.append(rep)
        if s:
            s.close()
    assert outcomes == [None, None, None, 2, 2]
    s, rep = try_connect(gw, "bob", target.port, target)  # per user: bob has his own
    assert s is not None, rep
    s.close()
    limit_denials(gw, "limit:new_sessions_per_minute", 2)
    assert limit_hits(gw, "new_sessions_per_minute") == 2
    gw.wait_audit(lambda r: r.get("event") == "session_end"
                  and r.get("close_reason") == "limit:new_sessions", count=2)
    check_schema(gw)


def serve_forever(conn: socket.socket, stop: threading.Event) -> None:
    """Sends to `conn` as fast as it takes bytes, until `stop` or an error."""
    chunk = os.urandom(256 * 1024)
    try:
        while not stop.is_set():
            conn.sendall(chunk)
    except OSError:
        pass


def measure_download(socks: list[socket.socket], warmup: float = 1.0,
                     window: float = 5.0) -> float:
    """Reads from every socket at once; bytes a second over `window` s after `warmup` s (the
    buckets start with one second's burst, and socket buffers fill first)."""
    counts = [0] * len(socks)
    marks = {}
    stop = threading.Event()

    def reader(i, s):
        s.settimeout(IO_TIMEOUT)
        while not stop.is_set():
            data = s.recv(1 << 20)
            if not data:
                return
            counts[i] += len(data)

    threads = [threading.Thread(target=reader, args=(i, s)) for i, s in enumerate(socks)]
    start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(warmup)
    marks["a"] = (time.monotonic(), sum(counts))
    time.sleep(window)
    marks["b"] = (time.monotonic(), sum(counts))
    stop.set()
    for s in socks:
        s.shutdown(socket.SHUT_RDWR)
    for t in threads:
        t.join(timeout=IO_TIMEOUT)
    (ta, ca), (tb, cb) = marks["a"], marks["b"]
    assert tb - start < warmup + window + 2
    rate = (cb - ca) / (tb - ta)
    print(f"measured {rate:.0f} B/s over {tb - ta:.2f} s")
    return rate


def test_bandwidth_per_session_download_splice_path(gateway_factory, target):
    gw = gateway_factory(config=limits_config(), policy=limits_policy(
        {"bandwidth": {"session": {"down": "1MiB"}}}))
    s, rep = try_connect(gw, "alice", target.port)
    assert s is not None, rep
    conn, _ = target.accept()
    stop = threading.Event()
    sender = threading.Thread(target=serve_forever, args=(conn, stop))
    sender.start()
    try:
        rate = measure_download([s])
    finally:
        stop.set()
        conn.close()
        s.close()
        sender.join(timeout=IO_TIMEOUT)
    assert abs(rate - MiB) / MiB < 0.10, f"{rate / MiB:.3f} MiB/s, configured 1 MiB/s"
    check_schema(gw)


def test_bandwidth_per_user_upload_shared_by_two_sessions(gateway_factory, target):
    gw = gateway_factory(config=limits_config(), policy=limits_policy(
        {"bandwidth": {"user": {"up": "1MiB"}}}))
    socks, conns = [], []
    for _ in range(2):
        s, rep = try_connect(gw, "alice", target.port)
        assert s is not None, rep
        socks.append(s)
        conns.append(target.accept()[0])
    stop = threading.Event()
    senders = [threading.Thread(target=serve_forever, args=(s, stop)) for s in socks]
    for t in senders:
        t.start()
    try:
        # Measured where the bytes arrive: the target.
        rate = measure_download(conns)
    finally:
        stop.set()
        for s in socks + conns:
            s.close()
        for t in senders:
            t.join(timeout=IO_TIMEOUT)
    assert abs(rate - MiB) / MiB < 0.10, f"{rate / MiB:.3f} MiB/s for both, configured 1 MiB/s"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def test_bandwidth_per_session_download_copy_path_tls(gateway_factory, target, pki):
    cfg = limits_config()
    cfg["listeners"] = [tls_listener(pki)]
    gw = gateway_factory(config=cfg, policy=limits_policy(
        {"bandwidth": {"session": {"down": 524288}}}))
    s, _ = tls_socks_connect(gw.addr("tls"), client_context(pki), "alice",
                             gw.passwords["alice"], "127.0.0.1", target.port)
    conn, _ = target.accept()
    stop = threading.Event()
    sender = threading.Thread(target=serve_forever, args=(conn, stop))
    sender.start()
    try:
        rate = measure_download([s])
    finally:
        stop.set()
        conn.close()
        sender.join(timeout=IO_TIMEOUT)
        s.close()
    assert abs(rate - 524288) / 524288 < 0.10, f"{rate:.0f} B/s, configured 524288 B/s"


def restart(gw):
    """Stops the gateway (SIGTERM, state saved) and starts it again in the same directory."""
    gw.stop()
    gw.kill()
    gw.proc = None
    gw._stopped = False
    gw.start()


def test_quota_refuses_once_used_up_and_survives_a_restart(gateway_factory, target):
    quota = 100000
    gw = gateway_factory(config=limits_config("limits-state.json"),
                         policy=limits_policy({"quota": {"day": quota, "month": "1GiB"}},
                                              ("alice", "bob")))
    s, rep = try_connect(gw, "alice", target.port)
    assert s is not None, rep
    conn, _ = target.accept()
    # 60000 up and 60000 down would be 120000: the session ends at exactly the quota.
    payload = os.urandom(60000)
    s.sendall(payload)
    got = b""
    conn.settimeout(IO_TIMEOUT)
    while len(got) < len(payload):
        chunk = conn.recv(65536)
        assert chunk
        got += chunk
    assert got == payload
    try:
        conn.sendall(payload)
    except OSError:
        pass
    how, down = wait_closed(s)
    assert how == "reset", how
    assert len(down) <= quota - len(payload)
    end = gw.wait_session_end(user="alice")
    assert end["close_reason"] == "limit:quota"
    assert end["bytes_up"] + end["bytes_down"] == quota
    conn.close()
    # Used up: refused at the start.
    s, rep = try_connect(gw, "alice", target.port)
    assert s is None and rep == 2
    limit_denials(gw, "limit:quota_day", 1)
    assert limit_hits(gw, "quota_day") == 1
    s, rep = try_connect(gw, "bob", target.port, target)  # bob's quota is his own
    assert s is not None, rep
    s.close()
    check_schema(gw)

    restart(gw)
    state = json.loads((gw.dir / "limits-state.json").read_text())
    assert state["version"] == 1
    assert state["users"]["alice"]["day"]["bytes"] == quota
    assert state["users"]["alice"]["month"]["bytes"] == quota
    s, rep = try_connect(gw, "alice", target.port)
    assert s is None and rep == 2, "the quota was reset by the restart"
    limit_denials(gw, "limit:quota_day", 2)
    check_schema(gw)


def test_damaged_state_file_stops_the_start(gateway_factory):
    gw = gateway_factory(config=limits_config("limits-state.json"),
                         policy=limits_policy({"quota": {"week": "1GiB"}}), start=False)
    bad = '{"version": 1, "users": {"alice": '
    (gw.dir / "limits-state.json").write_text(bad)
    with pytest.raises(AssertionError, match="exited with 1 before ready"):
        gw.start()
    assert "limits.state_file" in gw.log_text()
    assert "move it away to start from zero" in gw.log_text()
    assert (gw.dir / "limits-state.json").read_text() == bad  # left for the admin
    gw.kill()
    gw.proc = None
    gw._stopped = True


def test_quota_without_state_file_and_bad_limits_are_config_errors(gateway_factory):
    import subprocess
    from sgtest import SOCKSGATE_BIN
    gw = gateway_factory(config=limits_config(),
                         policy=limits_policy({"quota": {"day": "1GiB"}}), start=False)
    res = subprocess.run([SOCKSGATE_BIN, "validate", "--config", str(gw.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "set \"limits\": {\"state_file\": ...}" in res.stderr, res.stderr
    gw.write(config=limits_config(), policy=limits_policy({"bandwidth": {"session": {
        "down": "fast"}}}))
    res = subprocess.run([SOCKSGATE_BIN, "validate", "--config", str(gw.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "socksgate.json:" in res.stderr and "\"bandwidth.session.down\" must be" in res.stderr


def test_explain_prints_the_deciding_rules_limits(gateway_factory):
    import subprocess
    from sgtest import SOCKSGATE_BIN
    policy = limits_policy({"sessions": 4, "bandwidth": {"session": {"down": "1MiB"}}})
    policy["defaults"] = {"limits": {"quota": {"week": "1GB"}}}
    gw = gateway_factory(config=limits_config("state.json"), policy=policy, start=False)
    res = subprocess.run([SOCKSGATE_BIN, "explain", "--config", str(gw.config_path), "--user",
                          "alice", "--from", "127.0.0.1", "--to", "127.0.0.1:8080"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("limits of limited: sessions=4 bandwidth.session.down=1048576B/s "
            "quota.week=1000000000B") in res.stdout, res.stdout


def test_state_file_that_cannot_be_written_after_the_drop_stops_the_gateway(gateway_factory):
    gw = gateway_factory(config=limits_config("ro/limits.json"),
                         policy=limits_policy({"quota": {"day": "1GiB"}}), start=False)
    ro = gw.dir / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)  # nobody may create the temporary file there, root after the drop neither
    try:
        gw.start()
        rc = gw.proc.wait(timeout=IO_TIMEOUT)
    except AssertionError as e:  # it may exit before the test saw the ready file
        assert "exited with 1" in str(e), e
        rc = gw.proc.returncode
    assert rc == 1
    assert "must be writable by the user the gateway runs as" in gw.log_text(), gw.log_text()
    assert not any(m in gw.log_text() for m in gw.SANITIZER_MARKS), gw.log_text()
    gw.kill()
    gw.proc = None


def test_counters_survive_a_reload_and_a_changed_limit_applies_to_new_sessions(gateway_factory,
                                                                               target):
    gw = gateway_factory(config=limits_config(), policy=limits_policy({"sessions": 2}))
    held = []
    for _ in range(2):
        s, rep = try_connect(gw, "alice", target.port, target)
        assert s is not None, rep
        held.append(s)
    assert try_connect(gw, "alice", target.port)[1] == 2
    # Raised to 3: the two running sessions still count, so exactly one more fits.
    gw.write(config=limits_config(), policy=limits_policy({"sessions": 3}))
    ok, line = gw.reload()
    assert ok, line
    s, rep = try_connect(gw, "alice", target.port, target)
    assert s is not None, rep
    held.append(s)
    assert try_connect(gw, "alice", target.port)[1] == 2
    # Lowered to 1: running sessions stay, new ones are refused until fewer than 1 run.
    gw.write(config=limits_config(), policy=limits_policy({"sessions": 1}))
    ok, line = gw.reload()
    assert ok, line
    assert try_connect(gw, "alice", target.port)[1] == 2
    for s in held:
        s.close()
    gw.wait_audit(lambda r: r.get("event") == "session_end"
                  and r.get("close_reason") == "closed", count=3)
    s, rep = try_connect(gw, "alice", target.port, target)
    assert s is not None, rep
    s.close()
    limit_denials(gw, "limit:user_sessions", 3)
    check_schema(gw)


def test_udp_associate_and_bind_count_as_sessions(gateway_factory, target):
    policy = limits_policy({"sessions": 1})
    policy["rules"][0]["commands"] = ["connect", "bind", "udp"]
    gw = gateway_factory(config=limits_config(), policy=policy)
    udp, _ = socks_connect(gw.addr(), "alice", gw.passwords["alice"], "0.0.0.0", 0, cmd=3)
    try:
        for cmd in (2, 1, 3):  # BIND, CONNECT, another UDP ASSOCIATE: all over the limit
            with pytest.raises(SocksError) as e:
                socks_connect(gw.addr(), "alice", gw.passwords["alice"], "127.0.0.1",
                              target.port, cmd=cmd)
            assert e.value.stage == "reply" and e.value.data == 2
    finally:
        udp.close()
    recs = limit_denials(gw, "limit:user_sessions", 3)
    assert sorted(r["command"] for r in recs) == ["bind", "connect", "udp"]
    gw.wait_audit(lambda r: r.get("event") == "session_end" and r.get("command") == "udp"
                  and r.get("close_reason") == "closed")
    # The association ended: a BIND fits now.
    s, _ = socks_connect(gw.addr(), "alice", gw.passwords["alice"], "127.0.0.1", target.port,
                         cmd=2)
    s.close()
    check_schema(gw)


def test_udp_association_is_metered_by_quota_and_bandwidth(gateway_factory):
    """UDP ASSOCIATE is not a way around the limits: datagrams count against the user's quota
    (the association ends with limit:quota when it is used up) and the session's bandwidth
    (UDP is never queued: what the bucket cannot cover is dropped, counted as "rate")."""
    from test_agent import UdpEcho, udp_datagram
    echo = UdpEcho()
    try:
        policy = limits_policy({"quota": {"day": 12000},
                                "bandwidth": {"session": {"up": 4000}}})
        policy["rules"][0]["commands"] = ["udp"]
        gw = gateway_factory(config=limits_config("limits-state.json"), policy=policy)
        ctl, (raddr, rport) = socks_connect(gw.addr(), "alice", gw.passwords["alice"],
                                            "0.0.0.0", 0, cmd=3)
        with ctl, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(0.5)
            # A burst of 10 x 1000 bytes: the 4000 B/s bucket (one second of burst) passes
            # about four of them, the rest is dropped.
            for _ in range(10):
                u.sendto(udp_datagram("127.0.0.1", echo.port, b"a" * 1000), (raddr, rport))
            echoed = 0
            try:
                while True:
                    u.recvfrom(65535)
                    echoed += 1
            except socket.timeout:
                pass
            assert 3 <= echoed <= 5, echoed
            # Up and down count against the 12000-byte quota (about 8000 used by now): paced
            # within the bandwidth, a few more round trips use it up and the association ends.
            for _ in range(10):
                time.sleep(0.3)
                try:
                    u.sendto(udp_datagram("127.0.0.1", echo.port, b"b" * 1000), (raddr, rport))
                except OSError:
                    break
            how, _ = wait_closed(ctl)
        end = gw.wait_session_end(user="alice")
        assert end["close_reason"] == "limit:quota"
        assert end["bytes_up"] + end["bytes_down"] == 12000
        assert end["udp"]["dropped"]["rate"] >= 5
        check_schema(gw)
    finally:
        echo.close()
