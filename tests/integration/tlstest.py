"""TLS helpers for integration tests: a throwaway PKI made by certs/make-certs.sh (openssl
only, generated at test time), TLS SOCKS5 clients on Python's ssl module, stunnel."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

from sgtest import (IO_TIMEOUT, RUN_AS_GROUP, RUN_AS_USER, connect_tcp, run_as_dir,
                    socks_handshake)

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTS = REPO / "certs" / "make-certs.sh"


class Pki:
    """A CA with a server certificate, a CRL and client certificates on demand."""

    def __init__(self, path: Path):
        # Owned by the gateway's run_as user: a gateway that dropped root re-reads the
        # certificates, keys and CRL on reload (see sgtest.run_as_dir).
        self.dir = run_as_dir(Path(path))
        if self.dir.name.startswith("socksgate-gw-"):
            import atexit
            import shutil
            atexit.register(shutil.rmtree, self.dir, True)
        self._run("init", str(self.dir))
        self._chown()
        self.ca = self.dir / "ca.pem"
        self.crl = self.dir / "crl.pem"
        self.server_cert = self.dir / "server.pem"
        self.server_key = self.dir / "server.key"
        self.pin = (self.dir / "server.pin").read_text().strip()

    def _chown(self):
        if os.geteuid() != 0:
            return
        import grp
        import pwd
        uid, gid = pwd.getpwnam(RUN_AS_USER).pw_uid, grp.getgrnam(RUN_AS_GROUP).gr_gid
        for root, dirs, files in os.walk(self.dir):
            for n in dirs + files:
                os.chown(os.path.join(root, n), uid, gid)

    @staticmethod
    def _run(*args):
        res = subprocess.run([str(MAKE_CERTS), *args], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr

    def user(self, name: str, *opts: str) -> tuple[Path, Path]:
        self._run("user", str(self.dir), name, *opts)
        self._chown()
        return self.dir / "users" / f"{name}.pem", self.dir / "users" / f"{name}.key"

    def intermediate(self, name: str) -> "Pki":
        """An intermediate CA under this one, as a Pki of its own (ca = the intermediate;
        `root` = this CA, `crl` = both CAs' CRLs)."""
        self._run("intermediate", str(self.dir), name)
        self._chown()
        sub = Pki.__new__(Pki)
        sub.dir = self.dir / name
        sub.ca = sub.dir / "ca.pem"
        sub.root = self.ca
        sub.crl = sub.dir / "crl-bundle.pem"
        sub.server_cert, sub.server_key, sub.pin = self.server_cert, self.server_key, self.pin
        return sub

    def revoke(self, name: str) -> None:
        self._run("revoke", str(self.dir), name)
        self._chown()


def tls_listener(pki: Pki, name: str = "tls", address: str = "127.0.0.1",
                 methods=("userpass",), client_cert: dict | None = None, **tls) -> dict:
    t = {"cert": str(pki.server_cert), "key": str(pki.server_key)}
    t.update(tls)
    if client_cert is not None:
        cc = {"ca": str(pki.ca), "crl": str(pki.crl)}
        cc.update(client_cert)
        t["client_cert"] = cc
    return {"name": name, "address": address, "port": 0, "methods": list(methods), "tls": t}


def client_context(pki: Pki, cert: tuple[Path, Path] | None = None,
                   minimum=ssl.TLSVersion.TLSv1_2, maximum=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def tls_connect(addr: tuple[str, int], ctx: ssl.SSLContext, server_hostname: str = "localhost",
                session=None, timeout: float = IO_TIMEOUT) -> ssl.SSLSocket:
    raw = connect_tcp(addr, timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise


def tls_socks_connect(addr, ctx, user: str | None, password: str | None, host, port: int,
                      session=None, cmd: int = 1) -> tuple[ssl.SSLSocket, tuple[str, int]]:
    """TLS, then a whole SOCKS5 exchange inside. Raises SocksError like socks_connect."""
    return socks_handshake(tls_connect(addr, ctx, session=session), user, password, host, port,
                           cmd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stunnel:
    """stunnel in client mode: plain TCP on a loopback port -> TLS to `target`."""

    def __init__(self, workdir: Path, target: tuple[str, int], ca: Path,
                 host: str = "localhost"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        for _ in range(20):
            self.port = free_port()
            conf = self.dir / "stunnel.conf"
            conf.write_text(f"""foreground = yes
pid =
debug = 4
[socks]
client = yes
accept = 127.0.0.1:{self.port}
connect = {target[0]}:{target[1]}
CAfile = {ca}
verifyChain = yes
checkHost = {host}
sni = {host}
""")
            log = open(self.dir / "stunnel.log", "ab")
            self.proc = subprocess.Popen(["stunnel", str(conf)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.05)
            self.close()
        raise AssertionError("stunnel did not start: " +
                             (self.dir / "stunnel.log").read_text(errors="replace"))

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
