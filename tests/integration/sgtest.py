"""Helpers for socksgate integration tests: the real binary, real sockets, real clients.

Everything binds port 0 on loopback and discovers its port. Every process a test starts is
killed at teardown; every server thread is stopped.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration
The binary comes from $SOCKSGATE_BIN (default /work/main/build/gateway/socksgate).
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import ipaddress
import json
import os
import random
import select
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path


SOCKSGATE_BIN = os.environ.get("SOCKSGATE_BIN", "/work/main/build/gateway/socksgate")
READY_TIMEOUT = 10.0

# Generous margins: ctest runs tests in parallel and the suite also runs under ASan.
IO_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# Password hashes
# --------------------------------------------------------------------------------------------

_hash_cache: dict[tuple[str, str], str] = {}


def make_hash(password: str, kind: str = "yescrypt") -> str:
    """A crypt(3)-style hash of `password` made by a real, independent tool."""
    key = (kind, password)
    if key in _hash_cache:
        return _hash_cache[key]
    if kind == "yescrypt":
        out = subprocess.run(["mkpasswd", "-m", "yescrypt", "--stdin"], input=password,
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out.startswith("$y$"), out
    elif kind == "sha512":
        out = subprocess.run(["mkpasswd", "-m", "sha-512", "--stdin"], input=password,
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out.startswith("$6$"), out
    elif kind == "bcrypt":
        line = subprocess.run(["htpasswd", "-nbB", "x", password], capture_output=True,
                              text=True, check=True).stdout.strip()
        out = line.split(":", 1)[1]
        assert out.startswith("$2"), out
    elif kind == "socksgate":
        res = subprocess.run([SOCKSGATE_BIN, "hash-password"], input=password + "\n",
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        out = res.stdout.strip()
        assert out and "\n" not in out, res.stdout
    else:
        raise ValueError(kind)
    _hash_cache[key] = out
    return out


# --------------------------------------------------------------------------------------------
# The gateway process
# --------------------------------------------------------------------------------------------

# Set when ctest runs a sanitizer build (scripts/test.sh passes their options): the few latency
# bounds the issues demand are asserted as written on the release build, and with headroom
# for the sanitizers' several-fold slowdown there.
SANITIZED = any(k in os.environ for k in ("ASAN_OPTIONS", "TSAN_OPTIONS"))

DEFAULT_USERS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}


def default_policy() -> dict:
    return {
        "groups": {"eng": ["bob"]},
        "client_rules": [
            {"id": "lo", "action": "pass", "from": ["127.0.0.0/8", "::1/128"]},
        ],
        "rules": [
            {"id": "alice-local", "action": "pass", "users": ["alice"], "commands": ["connect"],
             "to": ["127.0.0.0/8", "::1/128", "localhost"], "ports": ["1024-65535"]},
            {"id": "deny-rest", "action": "block"},
        ],
    }


def default_config(**limits) -> dict:
    lim = {"negotiation_timeout_ms": 10000, "connect_timeout_ms": 5000, "idle_timeout_s": 3600,
           "max_sessions": 10000, "max_sessions_per_user": 0, "max_sessions_per_source": 0,
           "drain_timeout_s": 30}
    lim.update(limits)
    return {
        "listeners": [
            {"name": "main", "address": "127.0.0.1", "port": 0, "methods": ["userpass"]},
            {"name": "main6", "address": "::1", "port": 0, "methods": ["userpass", "none"]},
        ],
        "auth": {"userpass": {"file": "users.passwd", "failure_delay_ms": 200, "cache_ttl_s": 60,
                              "throttle": {"max_failures": 5, "window_s": 60, "lockout_s": 300}}},
        "policy": {"inline": default_policy()},
        "audit": {"file": "audit.jsonl"},
        "limits": lim,
    }


# Started as root, the gateway drops to nobody:nogroup once its listeners are bound (the
# default "run_as"), so what it re-reads on SIGHUP (config, policy, password file) and writes
# later (the ready file, a new audit file) must be reachable by that user. pytest's tmp_path
# lives under a 0700 root directory, so a gateway's directory is made elsewhere, owned by the
# run_as user, and tmp_path/<name> is a symlink to it (for post-mortems).
RUN_AS_USER, RUN_AS_GROUP = "nobody", "nogroup"


def run_as_dir(link: Path) -> Path:
    if os.geteuid() != 0:
        link.mkdir(parents=True, exist_ok=True)
        return link
    import grp
    import pwd
    import tempfile
    real = Path(tempfile.mkdtemp(prefix="socksgate-gw-"))
    os.chown(real, pwd.getpwnam(RUN_AS_USER).pw_uid, grp.getgrnam(RUN_AS_GROUP).gr_gid)
    os.chmod(real, 0o700)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(real)
    return real


class Gateway:
    """One socksgate process in its own directory.

    g = Gateway(dirpath); g.write(config=..., users=..., policy=...); g.start()
    g.port("main"), g.addr("main6"), g.audit(), g.reload(), g.stop()
    """

    def __init__(self, workdir: Path, binary: str = SOCKSGATE_BIN):
        self.dir = run_as_dir(Path(workdir))
        self.bin = binary
        self.config_path = self.dir / "socksgate.json"
        self.users_path = self.dir / "users.passwd"
        self.audit_path = self.dir / "audit.jsonl"
        self.ready_path = self.dir / "ready.json"
        self.log_path = self.dir / "gateway.log"
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}
        self.passwords: dict[str, str] = {}
        self._log_file = None
        self._stopped = False
        self.env: dict | None = None  # the process environment (None: ours)
        # Tests that corrupt the audit log on purpose turn this off.
        self.check_audit_schema = True

    # -- files ------------------------------------------------------------------------------

    def write(self, config: dict | None = None, users: dict | None = None,
              policy: dict | None = None, hash_kind: str = "yescrypt",
              policy_file: str | None = None) -> None:
        """Writes the config, the password file and (optionally) a separate policy file.

        users: {name: password}; a value starting with "$" is taken as a ready hash.
        policy: replaces the inline policy; with policy_file it is written to that file and
        the config refers to it.
        """
        cfg = config if config is not None else default_config()
        if users is None:
            users = dict(DEFAULT_USERS)
        self.write_users(users, hash_kind)
        if policy is not None:
            if policy_file:
                (self.dir / policy_file).write_text(json.dumps(policy, indent=2))
                cfg = dict(cfg)
                cfg["policy"] = {"file": policy_file}
            else:
                cfg = dict(cfg)
                cfg["policy"] = {"inline": policy}
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def write_users(self, users: dict, hash_kind: str = "yescrypt") -> None:
        lines = []
        for name, pw in users.items():
            if pw.startswith("$"):
                lines.append(f"{name}:{pw}")
            else:
                self.passwords[name] = pw
                lines.append(f"{name}:{make_hash(pw, hash_kind)}")
        self.users_path.write_text("\n".join(lines) + "\n")

    # -- process ----------------------------------------------------------------------------

    def start(self, extra_args: tuple = (), env: dict | None = None,
              prefix: tuple = ()) -> "Gateway":
        """env: extra environment variables; prefix: a command the binary runs under."""
        assert self.proc is None
        if self.ready_path.exists():
            self.ready_path.unlink()
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*prefix, self.bin, "run", "--config", str(self.config_path), "--ready-file",
             str(self.ready_path), "--log-level", "debug", *extra_args],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            cwd=self.dir, env={**(self.env or os.environ), **(env or {})})
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"socksgate exited with {self.proc.returncode} before ready:\n"
                                     + self.log_text())
            if self.ready_path.exists():
                try:
                    self.ready = json.loads(self.ready_path.read_text())
                    break
                except ValueError:
                    pass  # partially written
            time.sleep(0.02)
        else:
            self.kill()
            raise AssertionError("socksgate did not write its ready file within "
                                 f"{READY_TIMEOUT}s:\n" + self.log_text())
        assert self.ready["pid"] == self.proc.pid, self.ready
        return self

    def read_ready(self) -> dict:
        return json.loads(self.ready_path.read_text())

    def listener(self, name: str) -> dict:
        for l in self.ready["listeners"]:
            if l["name"] == name:
                return l
        raise KeyError(f"no listener {name!r} in {self.ready}")

    def port(self, name: str = "main") -> int:
        return int(self.listener(name)["port"])

    def addr(self, name: str = "main") -> tuple[str, int]:
        l = self.listener(name)
        return (l["address"], int(l["port"]))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(self, timeout: float = 10.0) -> tuple[bool, str]:
        """SIGHUP, then waits until the log reports the reload result.

        Returns (ok, the log line)."""
        assert self.alive()

        def results():
            return [l for l in self.log_text().splitlines()
                    if "reload: configuration" in l or "reload failed" in l]

        before = len(results())
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = results()
            if len(r) > before:
                line = r[before]
                return ("reload failed" not in line, line)
            time.sleep(0.02)
        raise AssertionError("no reload result in the log after SIGHUP:\n" + self.log_text())

    def send_sigterm(self) -> None:
        """SIGTERM without waiting (the test watches the drain itself)."""
        self._stopped = True
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; asserts exit code 0."""
        assert self.proc is not None
        self._stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("socksgate did not exit within "
                                 f"{timeout}s of SIGTERM:\n" + self.log_text())
        assert rc == 0, f"socksgate exited with {rc}:\n" + self.log_text()
        return rc

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer")

    def teardown(self, grace: float = 3.0) -> list[str]:
        """Ends the process (SIGTERM, SIGKILL after `grace` s); returns problems found: an
        unexpected death, a non-zero exit, sanitizer reports."""
        problems = []
        if self.proc is None:
            self._remove_dir()
            return problems
        rc = self.proc.poll()
        if rc is not None and not self._stopped:
            problems.append(f"socksgate died during the test (exit {rc})")
        elif rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=grace)
                if rc != 0:
                    problems.append(f"socksgate exited with {rc} on SIGTERM")
            except subprocess.TimeoutExpired:
                pass  # sessions a failed test left open: not this check's business
        self.kill()
        log = self.log_text()
        for mark in self.SANITIZER_MARKS:
            if mark in log:
                problems.append(f"sanitizer report ({mark})")
        if self.check_audit_schema:
            problems += self.audit_schema_problems()
        if problems:
            problems.append("log:\n" + log[-20000:])
        else:
            self._remove_dir()
        return problems

    def _remove_dir(self) -> None:
        """Gateway directories made under /tmp (run_as_dir) go; pytest's tmp_path stays."""
        if self.dir.parent == Path(tempfile.gettempdir()) and \
                self.dir.name.startswith("socksgate-gw-"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def audit_schema_problems(self) -> list[str]:
        """Every record the gateway wrote must be one the documented schema
        (docs/audit.schema.json) accepts: checked for every gateway a test ran, so that a new
        field or reason cannot slip past the schema. Lines that are not JSON are left to the
        tests about them (kill -9, tampering)."""
        try:
            data = self.audit_path.read_bytes()
        except (FileNotFoundError, PermissionError):
            return []
        v = cached_audit_validator()
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            errors = list(v.iter_errors(rec))
            if errors:
                return [f"audit record not accepted by docs/audit.schema.json: {line}\n" +
                        "\n".join(e.message for e in errors[:5])]
        return []

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- audit ------------------------------------------------------------------------------

    def audit_lines(self) -> list[str]:
        try:
            data = self.audit_path.read_bytes()
        except FileNotFoundError:
            return []
        text = data.decode("utf-8")  # must be valid UTF-8, always
        if text and not text.endswith("\n"):
            # A record still being written: ignore the partial tail.
            text = text[: text.rfind("\n") + 1]
        return [l for l in text.split("\n") if l]

    def audit(self) -> list[dict]:
        """Every audit record, parsed. Each line must be exactly one JSON object."""
        out = []
        for line in self.audit_lines():
            rec = json.loads(line)
            assert isinstance(rec, dict), line
            out.append(rec)
        return out

    def wait_audit(self, pred, count: int = 1, timeout: float = IO_TIMEOUT) -> list[dict]:
        """Waits until at least `count` records satisfy pred; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            recs = [r for r in self.audit() if pred(r)]
            if len(recs) >= count:
                return recs
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} matching audit records, got {len(recs)};"
                                     f" audit:\n" + "\n".join(self.audit_lines()) +
                                     "\nlog:\n" + self.log_text())
            time.sleep(0.02)

    def session_ends(self) -> list[dict]:
        return [r for r in self.audit() if r.get("event") == "session_end"]

    def wait_session_end(self, timeout: float = IO_TIMEOUT, **fields) -> dict:
        """The one session_end whose fields include `fields` (waits for it)."""
        def pred(r):
            return r.get("event") == "session_end" and all(r.get(k) == v for k, v in fields.items())
        recs = self.wait_audit(pred, 1, timeout)
        assert len(recs) == 1, f"more than one session_end matches {fields}: {recs}"
        return recs[0]

    def wait_session_end_for(self, client_sock_port: int, timeout: float = IO_TIMEOUT) -> dict:
        return self.wait_session_end(timeout=timeout, client_port=client_sock_port)


# --------------------------------------------------------------------------------------------
# Servers: HTTP (file), echo, single-connection target
# --------------------------------------------------------------------------------------------

def _bind_pair(make_v4, make_v6, attempts: int = 50):
    """Binds a v6 server on ::1 port 0 and a v4 server on 127.0.0.1 at the same port."""
    last = None
    for _ in range(attempts):
        s6 = make_v6(0)
        port = s6.server_address[1]
        try:
            s4 = make_v4(port)
        except OSError as e:
            last = e
            s6.server_close()
            continue
        return s4, s6, port
    raise AssertionError(f"could not bind v4 and v6 on one port: {last}")


class _V6Mixin:
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class _FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


class _Http4(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = False


class _Http6(_V6Mixin, _Http4):
    pass


class HttpServer:
    """Serves `path` (random 1-4 MiB) on 127.0.0.1 and ::1, same port."""

    def __init__(self):
        size = random.randint(1 << 20, 4 << 20)
        self.body = os.urandom(size)
        self.sha256 = hashlib.sha256(self.body).hexdigest()
        self.path = "/file.bin"
        self.s4, self.s6, self.port = _bind_pair(lambda p: _Http4(("127.0.0.1", p), _FileHandler),
                                                 lambda p: _Http6(("::1", p), _FileHandler))
        self.threads = []
        for s in (self.s4, self.s6):
            s.files = {self.path: self.body}
            t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}{self.path}"

    def close(self):
        for s in (self.s4, self.s6):
            s.shutdown()
            s.server_close()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(60)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Echo4(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = False


class _Echo6(_V6Mixin, _Echo4):
    pass


class EchoServer:
    """TCP echo on 127.0.0.1 and ::1 (same port): echoes until EOF, then half-closes."""

    def __init__(self):
        self.s4, self.s6, self.port = _bind_pair(lambda p: _Echo4(("127.0.0.1", p), _EchoHandler),
                                                 lambda p: _Echo6(("::1", p), _EchoHandler))
        for s in (self.s4, self.s6):
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()

    def close(self):
        for s in (self.s4, self.s6):
            s.shutdown()
            s.server_close()


class Target:
    """A listener whose accepted connections the test handles itself."""

    def __init__(self, host: str = "127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def accept(self, timeout: float = IO_TIMEOUT) -> tuple[socket.socket, tuple]:
        self.sock.settimeout(timeout)
        conn, peer = self.sock.accept()
        conn.settimeout(timeout)
        self.accepted.append(conn)
        return conn, peer

    def pending(self, wait: float = 0.0) -> bool:
        r, _, _ = select.select([self.sock], [], [], wait)
        return bool(r)

    def close(self):
        for c in self.accepted:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Raw SOCKS5
# --------------------------------------------------------------------------------------------

REP_OK, REP_FAIL, REP_NOT_ALLOWED = 0x00, 0x01, 0x02
REP_NET_UNREACH, REP_HOST_UNREACH, REP_REFUSED = 0x03, 0x04, 0x05
REP_CMD_NOT_SUPPORTED, REP_ATYP_NOT_SUPPORTED = 0x07, 0x08


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes: {buf!r}")
        buf += chunk
    return buf


def recv_all(s: socket.socket) -> bytes:
    """Reads until EOF."""
    parts = []
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def wait_closed(s: socket.socket, timeout: float = IO_TIMEOUT) -> tuple[str, bytes]:
    """Reads until the peer closes. Returns ("eof"|"reset", bytes read before)."""
    s.settimeout(timeout)
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return "reset", got
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s (read {got!r})")
        if not chunk:
            return "eof", got
        got += chunk


def encode_addr(host: str) -> bytes:
    """ATYP + address for an IPv4/IPv6 literal or a domain name (str or bytes)."""
    if isinstance(host, bytes):
        return b"\x03" + bytes([len(host)]) + host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode()
        return b"\x03" + bytes([len(raw)]) + raw
    if ip.version == 4:
        return b"\x01" + ip.packed
    return b"\x04" + ip.packed


def greeting(methods=(0x02,)) -> bytes:
    return bytes([5, len(methods), *methods])


def userpass(user, password) -> bytes:
    u = user.encode() if isinstance(user, str) else user
    p = password.encode() if isinstance(password, str) else password
    return bytes([1, len(u)]) + u + bytes([len(p)]) + p


def request(host, port: int, cmd: int = 1) -> bytes:
    return bytes([5, cmd, 0]) + encode_addr(host) + struct.pack(">H", port)


def read_reply(s: socket.socket) -> tuple[int, str, int]:
    """Reads one RFC 1928 reply: (REP, BND.ADDR, BND.PORT)."""
    head = recv_exact(s, 4)
    assert head[0] == 5 and head[2] == 0, f"bad reply header {head!r}"
    atyp = head[3]
    if atyp == 1:
        addr = str(ipaddress.IPv4Address(recv_exact(s, 4)))
    elif atyp == 4:
        addr = str(ipaddress.IPv6Address(recv_exact(s, 16)))
    elif atyp == 3:
        n = recv_exact(s, 1)[0]
        addr = recv_exact(s, n).decode()
    else:
        raise AssertionError(f"bad ATYP in reply: {head!r}")
    port = struct.unpack(">H", recv_exact(s, 2))[0]
    return head[1], addr, port


def connect_tcp(addr: tuple[str, int], source: str | None = None,
                timeout: float = IO_TIMEOUT) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if source:
        s.bind((source, 0))
    s.connect(addr)
    return s


class SocksError(Exception):
    def __init__(self, stage: str, data):
        super().__init__(f"{stage}: {data!r}")
        self.stage = stage
        self.data = data


def socks_connect(proxy: tuple[str, int], user: str | None, password: str | None,
                  host, port: int, source: str | None = None, cmd: int = 1,
                  timeout: float = IO_TIMEOUT) -> tuple[socket.socket, tuple[str, int]]:
    """A full SOCKS5 CONNECT. Returns (socket, (BND.ADDR, BND.PORT)); raises SocksError with
    the stage ("method", "auth", "reply") and what came back on failure (socket closed)."""
    return socks_handshake(connect_tcp(proxy, source, timeout), user, password, host, port, cmd)


def socks_handshake(s, user: str | None, password: str | None, host, port: int,
                    cmd: int = 1) -> tuple[socket.socket, tuple[str, int]]:
    """The SOCKS5 exchange of socks_connect on an open socket (plain, or TLS-wrapped)."""
    try:
        if user is None:
            s.sendall(greeting((0x00,)))
            m = recv_exact(s, 2)
            if m != b"\x05\x00":
                raise SocksError("method", m)
        else:
            s.sendall(greeting((0x02,)))
            m = recv_exact(s, 2)
            if m != b"\x05\x02":
                raise SocksError("method", m)
            s.sendall(userpass(user, password))
            a = recv_exact(s, 2)
            if a != b"\x01\x00":
                raise SocksError("auth", a)
        s.sendall(request(host, port, cmd))
        rep, baddr, bport = read_reply(s)
        if rep != 0:
            raise SocksError("reply", rep)
        return s, (baddr, bport)
    except BaseException:
        s.close()
        raise


def local_port(s: socket.socket) -> int:
    return s.getsockname()[1]


def tcp_info(local: int, remote: int) -> list[str]:
    """The kernel's view (`ss -ti`) of the one established loopback socket local port ->
    remote port: its info line, split into fields (congestion control first, then key:value)."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{local} and dport = :{remote} )"],
        capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 2, f"expected one socket {local}->{remote}, ss said:\n{out}"
    return lines[1].split()


def echo_roundtrip(s: socket.socket, payload: bytes) -> bytes:
    """Sends payload and reads back the same number of bytes."""
    result = bytearray()

    def reader():
        while len(result) < len(payload):
            chunk = s.recv(min(1 << 20, len(payload) - len(result)))
            if not chunk:
                break
            result.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(payload)
    t.join(timeout=60)
    return bytes(result)


def assert_serves(gw: Gateway, echo: EchoServer, listener: str = "main",
                  user: str = "alice") -> None:
    """The gateway still serves a good client end to end."""
    s, _ = socks_connect(gw.addr(listener), user, gw.passwords[user], "127.0.0.1", echo.port)
    try:
        payload = os.urandom(4096)
        assert echo_roundtrip(s, payload) == payload
    finally:
        s.close()


def unescape_untrusted(s: str) -> bytes:
    """Inverse of the documented audit escaping: `\\\\` -> `\\`, `\\xNN` -> byte NN."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] == "\\":
            out += b"\\"
            i += 2
        elif (c == "\\" and i + 3 < len(s) and s[i + 1] == "x"
              and all(ch in "0123456789abcdefABCDEF" for ch in s[i + 2:i + 4])):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            out += c.encode("utf-8")
            i += 1
    return bytes(out)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def connect_refused(addr: tuple[str, int]) -> bool:
    try:
        s = connect_tcp(addr, timeout=2)
    except ConnectionRefusedError:
        return True
    except OSError as e:
        return e.errno == errno.ECONNREFUSED
    s.close()
    return False


# --------------------------------------------------------------------------------------------
# Audit log: schema and chain
# --------------------------------------------------------------------------------------------

AUDIT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "audit.schema.json"


def audit_validator():
    """A jsonschema validator for docs/audit.schema.json (the documented record format)."""
    import jsonschema
    schema = json.loads(AUDIT_SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_VALIDATOR = None


def cached_audit_validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = audit_validator()
    return _VALIDATOR


def assert_audit_schema(lines: list[str]) -> None:
    """Every line is one JSON object that the documented schema accepts."""
    v = audit_validator()
    for line in lines:
        rec = json.loads(line)
        errors = sorted(v.iter_errors(rec), key=lambda e: list(e.path))
        assert not errors, f"{line}\n" + "\n".join(e.message for e in errors[:5])


def audit_verify(*files, key: str | Path | None = None,
                 binary: str = SOCKSGATE_BIN) -> subprocess.CompletedProcess:
    """`socksgate audit verify [--key KEY] FILE...` (returncode, stdout, stderr as text)."""
    args = [binary, "audit", "verify"]
    if key is not None:
        args += ["--key", str(key)]
    return subprocess.run(args + [str(f) for f in files], capture_output=True, text=True,
                          timeout=120)
