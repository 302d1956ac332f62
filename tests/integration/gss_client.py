"""An RFC 1961 (GSS-API, SOCKS5 method 01) client on python3-gssapi, MIT's GSS library: a second
implementation of the initiator, independent of the gateway's code.

    c = GssSocksClient(addr, ccache=realm.ccache_path("alice"))
    c.greet(); c.establish(); level = c.negotiate(2)
    c.send(request("127.0.0.1", port)); rep = c.read_reply()
    c.send(b"data"); c.recv_plain()

It exposes every step so that tests can break one (a flipped byte, a conf=False token, a wrong
message type) and see the gateway react. The process's KRB5_CONFIG must point at the test
realm (the tests set it with monkeypatch); the credential cache is passed explicitly.
"""

from __future__ import annotations

import socket
import struct

import gssapi

from sgtest import IO_TIMEOUT, recv_exact

VER = 0x01
MTYP_CONTEXT, MTYP_LEVEL, MTYP_DATA, MTYP_ABORT = 0x01, 0x02, 0x03, 0xFF
LEVEL_INTEG, LEVEL_CONF, LEVEL_PER_MESSAGE = 1, 2, 3
MAX_TOKEN = 65535

FLAGS = [gssapi.RequirementFlag.mutual_authentication,
         gssapi.RequirementFlag.replay_detection,
         gssapi.RequirementFlag.out_of_sequence_detection,
         gssapi.RequirementFlag.integrity,
         gssapi.RequirementFlag.confidentiality]


class Aborted(Exception):
    """The server sent 01 FF."""


def frame(mtyp: int, token: bytes) -> bytes:
    return struct.pack(">BBH", VER, mtyp, len(token)) + token


def read_frame(s: socket.socket) -> tuple[int, bytes]:
    head = recv_exact(s, 2)
    if head[0] != VER:
        raise AssertionError(f"bad VER from server: {head!r}")
    if head[1] == MTYP_ABORT:
        raise Aborted()
    n = struct.unpack(">H", recv_exact(s, 2))[0]
    return head[1], recv_exact(s, n)


def initiator_context(ccache, service: str = "rcmd@localhost", flags=None, lifetime=None,
                      bindings: bytes | None = None):
    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    cb = None
    if bindings is not None:
        # Addresses unspecified, as the gateway's acceptor and agent use them (RFC 5056 style).
        cb = gssapi.raw.ChannelBindings(application_data=bindings)
    return gssapi.SecurityContext(name=name, creds=creds, usage="initiate",
                                  flags=FLAGS if flags is None else flags, lifetime=lifetime,
                                  channel_bindings=cb)


def tls_server_end_point(tls_sock) -> bytes:
    """RFC 5929 channel-binding data of a TLS 1.2 connection: the server certificate's hash
    (SHA-256: the test PKI signs with ECDSA-SHA256)."""
    import hashlib
    return b"tls-server-end-point:" + hashlib.sha256(tls_sock.getpeercert(True)).digest()


class GssSocksClient:
    def __init__(self, addr: tuple[str, int], ccache, service: str = "rcmd@localhost",
                 timeout: float = IO_TIMEOUT, tls_ctx=None, bindings="tls"):
        """With `tls_ctx` the session runs inside TLS; `bindings` is then "tls" (the
        connection's tls-server-end-point data: the context must be TLS 1.2 at most), None (no
        channel bindings) or the bytes to send."""
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect(addr)
        if tls_ctx is not None:
            self.sock = tls_ctx.wrap_socket(self.sock, server_hostname="localhost")
            if bindings == "tls":
                bindings = tls_server_end_point(self.sock)
        else:
            bindings = None if bindings == "tls" else bindings
        self.ctx = initiator_context(ccache, service, bindings=bindings)
        self.level = 0
        self.first_token: bytes | None = None
        self._plain = b""

    def close(self):
        self.sock.close()

    # -- RFC 1928 method selection ----------------------------------------------------------

    def greet(self, methods=(0x01,)) -> None:
        self.sock.sendall(bytes([5, len(methods), *methods]))
        m = recv_exact(self.sock, 2)
        assert m == b"\x05\x01", f"method selection: {m!r}"

    # -- RFC 1961 section 3: context establishment ------------------------------------------

    def establish(self) -> None:
        """Runs gss_init_sec_context to completion; keeps the first token (for replays)."""
        token = self.ctx.step()
        self.first_token = token
        while True:
            if token:
                self.sock.sendall(frame(MTYP_CONTEXT, token))
            if self.ctx.complete:
                break
            mtyp, reply = read_frame(self.sock)
            assert mtyp == MTYP_CONTEXT, mtyp
            token = self.ctx.step(reply)
            if self.ctx.complete and not token:
                break

    # -- RFC 1961 section 4: protection level -----------------------------------------------

    def negotiate(self, level: int, nec: bool = False) -> int:
        octet = bytes([level])
        token = octet if nec else self.ctx.wrap(octet, False).message
        self.sock.sendall(frame(MTYP_LEVEL, token))
        mtyp, reply = read_frame(self.sock)
        assert mtyp == MTYP_LEVEL, mtyp
        got = reply if nec else self.ctx.unwrap(reply).message
        assert len(got) == 1, got
        self.level = got[0]
        return self.level

    # -- RFC 1961 section 5: encapsulation --------------------------------------------------

    def wrap(self, data: bytes, encrypt: bool | None = None) -> bytes:
        enc = (self.level == LEVEL_CONF) if encrypt is None else encrypt
        res = self.ctx.wrap(data, enc)
        assert res.encrypted == enc
        return frame(MTYP_DATA, res.message)

    def send(self, data: bytes, encrypt: bool | None = None, chunk: int = 32768) -> None:
        out = b"".join(self.wrap(data[i:i + chunk], encrypt) for i in range(0, len(data), chunk))
        self.sock.sendall(out)

    def recv_token(self) -> bytes:
        """One encapsulated message, unwrapped; checks its protection matches the level."""
        mtyp, token = read_frame(self.sock)
        assert mtyp == MTYP_DATA, mtyp
        res = self.ctx.unwrap(token)
        assert res.encrypted == (self.level == LEVEL_CONF), (res.encrypted, self.level)
        return res.message

    def recv_plain(self, n: int) -> bytes:
        while len(self._plain) < n:
            self._plain += self.recv_token()
        out, self._plain = self._plain[:n], self._plain[n:]
        return out

    def recv_until_eof(self) -> bytes:
        out = self._plain
        self._plain = b""
        while True:
            try:
                out += self.recv_token()
            except EOFError:
                return out

    def read_reply(self) -> tuple[int, bytes]:
        """The encapsulated RFC 1928 reply: (REP, the whole reply)."""
        head = self.recv_plain(4)
        assert head[0] == 5, head
        atyp = head[3]
        alen = {1: 4, 4: 16}.get(atyp)
        if alen is None:
            alen = self.recv_plain(1)[0]
        rest = self.recv_plain(alen + 2)
        return head[1], head + rest

    # -- all of it --------------------------------------------------------------------------

    def connect(self, request: bytes, level: int = LEVEL_CONF) -> int:
        self.greet()
        self.establish()
        self.negotiate(level)
        self.send(request)
        rep, _ = self.read_reply()
        return rep
