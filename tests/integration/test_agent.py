"""The agent (`socksgate agent`): local SOCKS5 / HTTP CONNECT on loopback -> TLS -> gateway.

Real clients (curl, ncat, raw sockets), a real gateway with a TLS listener and a throwaway PKI
(certs/make-certs.sh), every port discovered from ready files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sgtest import (IO_TIMEOUT, READY_TIMEOUT, SOCKSGATE_BIN, connect_tcp, default_config,
                    default_policy, encode_addr, greeting, read_reply, recv_all, recv_exact,
                    request, wait_closed)
from tlstest import Pki, tls_listener

REP_OK, REP_FAIL, REP_NOT_ALLOWED = 0, 1, 2
CMD_BIND, CMD_UDP = 2, 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.alice = p.user("alice")
    return p


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """A second, unrelated CA: the agent must refuse a gateway it vouches for nothing of."""
    return Pki(tmp_path_factory.mktemp("other-pki"))


def agent_policy() -> dict:
    p = default_policy()
    p["rules"].insert(0, {"id": "alice-bind-udp", "action": "pass", "users": ["alice"],
                          "commands": ["bind", "udp"], "to": ["127.0.0.0/8", "::1/128"]})
    return p


def gateway_config(pki, port: int = 0) -> dict:
    cfg = default_config()
    listener = tls_listener(pki)
    listener["port"] = port
    cfg["listeners"] = [listener]
    cfg["bind"] = {"ports": "47000-47999", "timeout_s": 30}
    return cfg


class AgentProc:
    """One `socksgate agent` process in its own directory (like sgtest.Gateway)."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "agent.json"
        self.ready_path = self.dir / "agent-ready.json"
        self.log_path = self.dir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}
        self._log = None

    def write(self, cfg: dict) -> None:
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def start(self, env: dict | None = None, wait_ready: bool = True) -> "AgentProc":
        if self.ready_path.exists():
            self.ready_path.unlink()
        self._log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [SOCKSGATE_BIN, "agent", "--config", str(self.config_path), "--ready-file",
             str(self.ready_path), "--log-level", "debug"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, cwd=self.dir,
            env=full_env)
        if not wait_ready:
            return self
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n" + self.log())
            if self.ready_path.exists():
                try:
                    self.ready = json.loads(self.ready_path.read_text())
                    break
                except ValueError:
                    pass
            time.sleep(0.02)
        else:
            raise AssertionError("agent not ready:\n" + self.log())
        assert self.ready["pid"] == self.proc.pid
        return self

    def addr(self, name: str = "local") -> tuple[str, int]:
        for l in self.ready["listeners"]:
            if l["name"] == name:
                return (l["address"], int(l["port"]))
        raise KeyError(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = IO_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if needle in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not in the agent's log:\n" + self.log())

    def teardown(self) -> list[str]:
        problems = []
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(timeout=5)
                    if rc != 0:
                        problems.append(f"agent exited with {rc} on SIGTERM")
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    problems.append("agent did not stop on SIGTERM")
        if self._log is not None:
            self._log.close()
        text = self.log()
        for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer"):
            if mark in text:
                problems.append(f"sanitizer report in the agent ({mark}):\n{text[-20000:]}")
        return problems


@pytest.fixture
def agent_factory(tmp_path):
    made: list[AgentProc] = []

    def make(gw_port: int, pki, name: str = "agent", start: bool = True, env=None,
             **overrides) -> AgentProc:
        a = AgentProc(tmp_path / name)
        a.write(agent_config(gw_port, pki, a.dir, **overrides))
        made.append(a)
        if start:
            a.start(env=env)
        return a

    yield make
    problems = []
    for a in made:
        problems += a.teardown()
    assert not problems, "\n".join(problems)


def agent_config(gw_port: int, pki, workdir: Path, password: str | None = "alice-Secret-1",
                 user: str = "alice", gateway: dict | None = None, auth: dict | None = None,
                 **top) -> dict:
    if auth is None:
        pw_file = workdir / "password"
        pw_file.write_text((password or "") + "\n")
        pw_file.chmod(0o600)
        auth = {"method": "userpass", "user": user, "password_file": str(pw_file)}
    g = {"host": "127.0.0.1", "port": gw_port, "server_name": "localhost", "ca": str(pki.ca),
         "connect_timeout_ms": 5000, "handshake_timeout_ms": 5000}
    g.update(gateway or {})
    g = {k: v for k, v in g.items() if v is not None}
    cfg = {"listen": [{"name": "local", "address": "127.0.0.1", "port": 0},
                      {"name": "local6", "address": "::1", "port": 0}],
           "gateway": g, "auth": auth, "backoff": {"initial_ms": 50, "max_ms": 400}}
    cfg.update(top)
    return cfg


@pytest.fixture
def gw(gateway_factory, pki):
    return gateway_factory(config=gateway_config(pki), policy=agent_policy())


def curl(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", *args],
                          capture_output=True, text=True, timeout=timeout)


def fetch_through(proxy_args: list[str], url: str, http_server, out: Path,
                  log: str = "") -> None:
    """curl through the agent; the file must arrive intact."""
    res = curl(*proxy_args, "-o", str(out), url)
    assert res.returncode == 0, res.stderr + log
    assert hashlib.sha256(out.read_bytes()).hexdigest() == http_server.sha256


def local_socks(agent: AgentProc, host, port: int, cmd: int = 1, listener: str = "local"):
    """SOCKS5 without authentication to the agent; returns (socket, reply)."""
    s = connect_tcp(agent.addr(listener))
    s.sendall(greeting((0x00,)))
    assert recv_exact(s, 2) == b"\x05\x00"
    s.sendall(request(host, port, cmd))
    return s, read_reply(s)


# --------------------------------------------------------------------------------------------
# CONNECT end to end
# --------------------------------------------------------------------------------------------

def test_curl_socks5_hostname_through_agent(gw, agent_factory, pki, http_server, tmp_path):
    agent = agent_factory(gw.port("tls"), pki)
    out = tmp_path / "file.bin"
    host, port = agent.addr()
    fetch_through(["--socks5-hostname", f"{host}:{port}"], http_server.url("localhost"),
                  http_server, out, agent.log())
    rec = gw.wait_session_end(user="alice")
    assert rec["host"] == "localhost" and rec["tls_version"] and rec["method"] == "userpass"
    assert rec["bytes_down"] > len(http_server.body)


def test_curl_http_connect_through_agent(gw, agent_factory, pki, http_server, tmp_path):
    agent = agent_factory(gw.port("tls"), pki)
    out = tmp_path / "file.bin"
    host, port = agent.addr()
    fetch_through(["-p", "-x", f"http://{host}:{port}"], http_server.url("127.0.0.1"),
                  http_server, out, agent.log())
    rec = gw.wait_session_end(user="alice")
    assert rec["host"] == "127.0.0.1" and rec["port"] == http_server.port


def test_curl_over_ipv6_listener(gw, agent_factory, pki, http_server, tmp_path):
    agent = agent_factory(gw.port("tls"), pki)
    out = tmp_path / "file.bin"
    host, port = agent.addr("local6")
    fetch_through(["--socks5-hostname", f"[{host}]:{port}"], http_server.url("[::1]"),
                  http_server, out, agent.log())


def test_ncat_as_ssh_proxycommand(gw, agent_factory, pki, echo_server):
    """What `ssh -o ProxyCommand='ncat --proxy-type socks5 --proxy H:P %h %p'` runs."""
    agent = agent_factory(gw.port("tls"), pki)
    host, port = agent.addr()
    payload = os.urandom(200_000)
    res = subprocess.run(["ncat", "--proxy-type", "socks5", "--proxy", f"{host}:{port}",
                          "127.0.0.1", str(echo_server.port)],
                         input=payload, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr + agent.log().encode()
    assert hashlib.sha256(res.stdout).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_policy_denial_is_passed_on(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki)
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", 80)  # port below 1024: not allowed
    s.close()
    assert rep == REP_NOT_ALLOWED
    host, port = agent.addr()
    res = curl("-p", "-x", f"http://{host}:{port}", "http://127.0.0.1:80/")
    assert res.returncode != 0 and "403" in res.stderr, res.stderr


def test_local_client_must_not_ask_for_a_password(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki)
    with connect_tcp(agent.addr()) as s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\xff"


def test_http_other_methods_refused(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki)
    with connect_tcp(agent.addr()) as s:
        s.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        how, data = wait_closed(s)
    assert data.startswith(b"HTTP/1.1 405 "), data


# --------------------------------------------------------------------------------------------
# BIND and UDP
# --------------------------------------------------------------------------------------------

def test_bind_through_agent(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki)
    s, (rep, baddr, bport) = local_socks(agent, "127.0.0.1", 0, cmd=CMD_BIND)
    with s:
        assert rep == REP_OK, agent.log()
        assert baddr == "127.0.0.1" and 47000 <= bport <= 47999
        peer = connect_tcp((baddr, bport))
        with peer:
            rep2, paddr, pport = read_reply(s)
            assert rep2 == REP_OK and paddr == "127.0.0.1"
            assert pport == peer.getsockname()[1]
            peer.sendall(b"from the peer")
            assert recv_exact(s, 13) == b"from the peer"
            s.sendall(b"from the client")
            assert recv_exact(peer, 15) == b"from the client"
            peer.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b""
    rec = gw.wait_session_end(command="bind")
    assert rec["close_reason"] in ("closed", "client_closed", "upstream_closed"), rec


class UdpEcho:
    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.sock.sendto(data, peer)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def udp_datagram(host: str, port: int, data: bytes) -> bytes:
    return b"\x00\x00\x00" + encode_addr(host) + struct.pack(">H", port) + data


def test_udp_through_agent_to_local_echo(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki)
    echo = UdpEcho()
    try:
        ctl, (rep, raddr, rport) = local_socks(agent, "0.0.0.0", 0, cmd=CMD_UDP)
        with ctl:
            assert rep == REP_OK, agent.log()
            assert raddr == "127.0.0.1"
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(IO_TIMEOUT)
            with u:
                for size in (1, 1000, 8000, 60000):
                    payload = os.urandom(size)
                    u.sendto(udp_datagram("127.0.0.1", echo.port, payload), (raddr, rport))
                    data, frm = u.recvfrom(65535)
                    assert frm == (raddr, rport)
                    head = udp_datagram("127.0.0.1", echo.port, b"")
                    assert data[:len(head)] == head and data[len(head):] == payload
                # A datagram from another socket is not the client's: dropped.
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                    other.settimeout(0.5)
                    other.sendto(udp_datagram("127.0.0.1", echo.port, b"x"), (raddr, rport))
                    with pytest.raises(socket.timeout):
                        other.recvfrom(65535)
        rec = gw.wait_session_end(command="udp")
        assert rec["bytes_up"] >= 1 + 1000 + 8000 + 60000
    finally:
        echo.close()


# --------------------------------------------------------------------------------------------
# Restarts, certificate and credential failures
# --------------------------------------------------------------------------------------------

def test_gateway_restarted_under_the_agent(gateway_factory, agent_factory, pki, echo_server):
    gw = gateway_factory(name="gw1", config=gateway_config(pki), policy=agent_policy())
    port = gw.port("tls")
    agent = agent_factory(port, pki)

    def roundtrip():
        s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
        with s:
            assert rep == REP_OK
            s.sendall(b"ping")
            assert recv_exact(s, 4) == b"ping"

    roundtrip()
    down_at = time.monotonic()
    gw.stop()
    # While the gateway is down a session waits (backoff) and then fails cleanly.
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
    s.close()
    assert rep == REP_FAIL
    agent.wait_log("unreachable")
    # Same port again: sessions waiting (several at once) get through once it is back.
    results = []

    def waiting_session():
        try:
            roundtrip()
            results.append("ok")
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(e)

    threads = [threading.Thread(target=waiting_session) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    gw2 = gateway_factory(name="gw2", config=gateway_config(pki, port=port),
                          policy=agent_policy())
    assert gw2.port("tls") == port
    for t in threads:
        t.join(30)
    outage = time.monotonic() - down_at
    assert results == ["ok"] * 6, (results, agent.log())
    agent.wait_log("reachable again")
    roundtrip()
    # The outage is logged once per backoff step (50 ms doubling up to 400 ms), not once per
    # session: six sessions waited through it together.
    steps = [l for l in agent.log().splitlines() if "unreachable:" in l]
    assert 4 <= len(steps) <= outage / 0.4 + 8, "\n".join(steps)
    delays = [int(l.split("next attempt in ")[1].split()[0]) for l in steps]
    assert delays[:4] == [50, 100, 200, 400] and max(delays) == 400, delays


def test_wrong_ca_refused_clearly(gw, agent_factory, pki, other_pki):
    agent = agent_factory(gw.port("tls"), pki, gateway={"ca": str(other_pki.ca)})
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", 9)
    s.close()
    assert rep == REP_FAIL
    line = agent.wait_log("certificate verify failed")
    assert "gateway 127.0.0.1:" in line
    # Not retried: the gateway saw one handshake, the agent logged no outage.
    ends = gw.wait_audit(lambda r: r.get("event") == "session_end")
    time.sleep(0.3)
    assert len([r for r in gw.audit() if r.get("event") == "session_end"]) == 1, gw.audit()
    assert ends[0]["close_reason"] == "tls_handshake_failed", ends
    assert "unreachable" not in agent.log()
    host, port = agent.addr()
    res = curl("-p", "-x", f"http://{host}:{port}", "http://127.0.0.1:9/")
    assert res.returncode != 0 and "502" in res.stderr, res.stderr
    assert not [r for r in gw.audit() if r.get("event") == "session_end"
                and r.get("user") == "alice"]


def test_wrong_server_name_refused(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki, gateway={"server_name": "not-the-gateway.test"})
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", 9)
    s.close()
    assert rep == REP_FAIL
    agent.wait_log("certificate verify failed")


def test_wrong_password_refused_clearly(gw, agent_factory, pki):
    agent = agent_factory(gw.port("tls"), pki, password="not-the-password")
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", 9)
    s.close()
    assert rep == REP_NOT_ALLOWED
    line = agent.wait_log("rejected the password")
    assert "alice" in line and "not-the-password" not in agent.log()
    host, port = agent.addr()
    res = curl("-p", "-x", f"http://{host}:{port}", "http://127.0.0.1:9/")
    assert res.returncode != 0 and "407" in res.stderr, res.stderr
    gw.wait_audit(lambda r: r.get("event") == "auth_failure" and r.get("user") == "alice")


def test_pinned_key_works_and_wrong_pin_refused(gw, agent_factory, pki, echo_server):
    good = agent_factory(gw.port("tls"), pki, name="good",
                         gateway={"ca": None, "pin_sha256": pki.pin})
    s, (rep, _, _) = local_socks(good, "127.0.0.1", echo_server.port)
    with s:
        assert rep == REP_OK, good.log()
        s.sendall(b"pinned")
        assert recv_exact(s, 6) == b"pinned"
    wrong = "0" * 64 if pki.pin != "0" * 64 else "1" * 64
    bad = agent_factory(gw.port("tls"), pki, name="bad",
                        gateway={"ca": None, "pin_sha256": wrong})
    s, (rep, _, _) = local_socks(bad, "127.0.0.1", echo_server.port)
    s.close()
    assert rep == REP_FAIL
    bad.wait_log("does not match the pinned SHA-256")


def test_password_from_env_and_gateway_by_name(gw, agent_factory, pki, echo_server):
    # "localhost" is resolved by the agent (::1 and 127.0.0.1; the gateway listens on the
    # latter only, so the first address may be refused and the next one used).
    agent = agent_factory(gw.port("tls"), pki,
                          auth={"method": "userpass", "user": "alice",
                                "password_env": "SG_AGENT_PW"},
                          env={"SG_AGENT_PW": gw.passwords["alice"]},
                          gateway={"host": "localhost"})
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
    with s:
        assert rep == REP_OK, agent.log()


def test_client_certificate_with_method_none(gateway_factory, agent_factory, pki, echo_server):
    cfg = default_config()
    cfg["listeners"] = [tls_listener(pki, methods=("none",),
                                     client_cert={"mode": "required", "identity": "cn"})]
    gw = gateway_factory(config=cfg, policy=agent_policy())
    cert, key = pki.alice
    agent = agent_factory(gw.port("tls"), pki, auth={"method": "none"},
                          gateway={"client_cert": str(cert), "client_key": str(key)})
    s, (rep, _, _) = local_socks(agent, "127.0.0.1", echo_server.port)
    with s:
        assert rep == REP_OK, agent.log()
        s.sendall(b"cert")
        assert recv_exact(s, 4) == b"cert"
    rec = gw.wait_session_end(user="alice")
    assert rec["cert_user"] == "alice"


def test_password_prompt_on_the_terminal(gw, pki, tmp_path, echo_server):
    """prompt: true asks on the controlling terminal (a pty here), with echo off."""
    import pty
    a = AgentProc(tmp_path / "prompt")
    a.write(agent_config(gw.port("tls"), pki, a.dir,
                         auth={"method": "userpass", "user": "alice", "prompt": True}))
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.execv(SOCKSGATE_BIN, [SOCKSGATE_BIN, "agent", "--config", str(a.config_path),
                                 "--ready-file", str(a.ready_path)])
    seen = bytearray()
    stop = threading.Event()

    def drain():  # the agent logs to the terminal too: keep it from blocking
        while not stop.is_set():
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while b"password for alice" not in seen:
            assert time.monotonic() < deadline, bytes(seen)
            time.sleep(0.02)
        password = gw.passwords["alice"]
        os.write(fd, password.encode() + b"\n")
        while not a.ready_path.exists():
            assert time.monotonic() < deadline, bytes(seen)
            time.sleep(0.02)
        time.sleep(0.05)
        a.ready = json.loads(a.ready_path.read_text())
        s, (rep, _, _) = local_socks(a, "127.0.0.1", echo_server.port)
        with s:
            assert rep == REP_OK, bytes(seen)
            s.sendall(b"typed")
            assert recv_exact(s, 5) == b"typed"
        assert password.encode() not in seen, "the password was echoed"
    finally:
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        stop.set()
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, bytes(seen))
    for mark in (b"ERROR: AddressSanitizer", b"runtime error:", b"WARNING: ThreadSanitizer"):
        assert mark not in seen, bytes(seen)


# --------------------------------------------------------------------------------------------
# Configuration and start-up errors
# --------------------------------------------------------------------------------------------

def run_agent_once(cfg: dict, tmp_path: Path, env=None) -> subprocess.CompletedProcess:
    path = tmp_path / "agent-check.json"
    path.write_text(json.dumps(cfg, indent=2))
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([SOCKSGATE_BIN, "agent", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, env=full_env, stdin=subprocess.DEVNULL)


def test_non_loopback_listen_address_rejected(pki, tmp_path):
    cfg = agent_config(1, pki, tmp_path)
    cfg["listen"] = [{"address": "0.0.0.0", "port": 0}]
    res = run_agent_once(cfg, tmp_path)
    assert res.returncode == 2
    assert "agent-check.json:" in res.stderr and "loopback" in res.stderr, res.stderr


def test_config_errors_name_the_field(pki, tmp_path):
    cfg = agent_config(1, pki, tmp_path, gateway={"ca": None, "pin_sha256": "abc",
                                                  "bogus": 1})
    res = run_agent_once(cfg, tmp_path)
    assert res.returncode == 2
    assert 'unknown key "bogus"' in res.stderr and "pin_sha256" in res.stderr, res.stderr
    cfg = agent_config(1, pki, tmp_path, auth={"method": "userpass", "user": "alice"})
    res = run_agent_once(cfg, tmp_path)
    assert res.returncode == 2 and "password_file" in res.stderr, res.stderr
    cfg = agent_config(1, pki, tmp_path, auth={"method": "kerberos"})
    res = run_agent_once(cfg, tmp_path)
    assert res.returncode == 2 and 'unknown method "kerberos"' in res.stderr, res.stderr


def test_password_sources_fail_clearly(pki, tmp_path):
    cfg = agent_config(1, pki, tmp_path, auth={"method": "userpass", "user": "alice",
                                               "password_env": "SG_AGENT_UNSET_VAR"})
    env = dict(os.environ)
    env.pop("SG_AGENT_UNSET_VAR", None)
    res = run_agent_once(cfg, tmp_path)
    assert res.returncode == 2 and "SG_AGENT_UNSET_VAR" in res.stderr, res.stderr
    cfg = agent_config(1, pki, tmp_path, auth={"method": "userpass", "user": "alice",
                                               "password_file": str(tmp_path / "missing")})
    res = run_agent_once(cfg, tmp_path)
    assert res.returncode == 2 and "missing" in res.stderr, res.stderr
    # No terminal (stdin is /dev/null and the test runs without a controlling tty).
    cfg = agent_config(1, pki, tmp_path, auth={"method": "userpass", "user": "alice",
                                               "prompt": True})
    res = subprocess.run([SOCKSGATE_BIN, "agent", "--config", str(tmp_path / "p.json")],
                         capture_output=True, text=True, timeout=30, start_new_session=True,
                         stdin=subprocess.DEVNULL) if (tmp_path / "p.json").write_text(
        json.dumps(cfg)) else None
    assert res.returncode == 2 and "/dev/tty" in res.stderr, res.stderr


def test_docs_example_serves(gw, pki, tmp_path, http_server):
    """docs/examples/agent.json, with only the values this machine needs changed."""
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "agent.json"
    cfg = json.loads(example.read_text())
    for l in cfg["listen"]:
        l["port"] = 0
    cfg["gateway"].update({"host": "127.0.0.1", "port": gw.port("tls"), "server_name": "localhost",
                           "ca": str(pki.ca)})
    a = AgentProc(tmp_path / "example")
    a.write(cfg)
    a.start(env={cfg["auth"]["password_env"]: gw.passwords[cfg["auth"]["user"]]})
    try:
        out = tmp_path / "file.bin"
        host, port = a.addr("local")
        fetch_through(["--socks5-hostname", f"{host}:{port}"], http_server.url("localhost"),
                      http_server, out, a.log())
    finally:
        problems = a.teardown()
    assert not problems, problems


def test_help_and_usage():
    res = subprocess.run([SOCKSGATE_BIN, "agent", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0 and "--ready-file" in res.stdout and "--log-level" in res.stdout
    res = subprocess.run([SOCKSGATE_BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert "agent" in res.stdout
    res = subprocess.run([SOCKSGATE_BIN, "agent"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "missing --config" in res.stderr, res.stderr
    res = subprocess.run([SOCKSGATE_BIN, "agent", "--config", "x", "--password", "p"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "unknown option --password" in res.stderr, res.stderr
