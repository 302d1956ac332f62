"""TCP congestion control per leg: a listener's "congestion_control" on the connections it
accepts, "upstream": {"congestion_control"} on the connections to destinations (CONNECT and
the peer of a BIND). Checked on the kernel's own view of each socket (`ss -ti`), against the
system default on the sockets the gateway does not own."""

import os
import subprocess
from pathlib import Path

import pytest

from sgtest import connect_tcp, local_port, read_reply, recv_exact, socks_connect, tcp_info
from test_bind import bind_config, bind_policy, start_bind


def read_names(name: str) -> list[str]:
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return f.read().split()


SYSTEM_DEFAULT = read_names("tcp_congestion_control")[0]
# Two algorithms the gateway may set that differ from the system default (and from each other
# when the host allows it), so every assertion below can only pass if the setting took effect.
OTHERS = [n for n in read_names("tcp_allowed_congestion_control") if n != SYSTEM_DEFAULT]
assert OTHERS, "the host must allow one congestion control besides the default (reno is built in)"
CLIENT_CC = OTHERS[0]
UPSTREAM_CC = OTHERS[1] if len(OTHERS) > 1 else OTHERS[0]


def congestion_of(local: int, remote: int) -> str:
    """The congestion control of the established loopback socket local port -> remote port."""
    return tcp_info(local, remote)[0]


def tuned_config(client_cc: str | None = CLIENT_CC, upstream_cc: str | None = UPSTREAM_CC):
    c = bind_config()
    if client_cc is not None:
        c["listeners"][0]["congestion_control"] = client_cc
    if upstream_cc is not None:
        c["upstream"] = {"congestion_control": upstream_cc}
    return c


def connect_legs(gw, target):
    """One CONNECT session; returns (client socket, target-side socket, the four ports)."""
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], target.host,
                         target.port)
    conn, peer = target.accept()
    s.sendall(b"x")
    assert recv_exact(conn, 1) == b"x"
    return s, conn, (local_port(s), gw.port("main"), peer[1], target.port)


def assert_new_session_legs(gw, target, client_cc: str, upstream_cc: str) -> None:
    """Opens a CONNECT session and checks the congestion control of the gateway's two sockets,
    and that the client's and the target's own sockets kept the system default."""
    s, conn, (client, gw_port, upstream, target_port) = connect_legs(gw, target)
    try:
        assert congestion_of(gw_port, client) == client_cc, "gateway -> client leg"
        assert congestion_of(upstream, target_port) == upstream_cc, "gateway -> target leg"
        assert congestion_of(client, gw_port) == SYSTEM_DEFAULT, "the client's own socket"
        assert congestion_of(target_port, upstream) == SYSTEM_DEFAULT, "the target's own socket"
    finally:
        s.close()
        conn.close()


def test_connect_sets_each_leg_and_leaves_the_endpoints_alone(gateway_factory, target):
    gw = gateway_factory(config=tuned_config(), policy=bind_policy())
    assert_new_session_legs(gw, target, CLIENT_CC, UPSTREAM_CC)


def test_unset_means_the_kernel_default(gateway_factory, target):
    assert_new_session_legs(gateway_factory(), target, SYSTEM_DEFAULT, SYSTEM_DEFAULT)


def test_bind_peer_connection_is_an_upstream_leg(gateway_factory):
    gw = gateway_factory(config=tuned_config(), policy=bind_policy())
    s, (rep, addr, port) = start_bind(gw, "127.0.0.1")
    assert rep == 0
    peer = connect_tcp((addr, port))
    assert read_reply(s)[0] == 0
    try:
        assert congestion_of(port, local_port(peer)) == UPSTREAM_CC
        assert congestion_of(gw.port("main"), local_port(s)) == CLIENT_CC
    finally:
        peer.close()
        s.close()


def test_reload_changes_new_sessions_only(gateway_factory, target):
    gw = gateway_factory(config=tuned_config(), policy=bind_policy())
    old_s, old_conn, (old_client, gw_port, old_up, target_port) = connect_legs(gw, target)
    # Swap the two legs' settings, then drop both keys.
    gw.write(config=tuned_config(client_cc=UPSTREAM_CC, upstream_cc=CLIENT_CC),
             policy=bind_policy())
    ok, text = gw.reload()
    assert ok, text
    try:
        assert_new_session_legs(gw, target, UPSTREAM_CC, CLIENT_CC)
        assert congestion_of(gw_port, old_client) == CLIENT_CC, "a running session keeps its own"
        assert congestion_of(old_up, target_port) == UPSTREAM_CC
        gw.write(config=tuned_config(client_cc=None, upstream_cc=None), policy=bind_policy())
        ok, text = gw.reload()
        assert ok, text
        assert_new_session_legs(gw, target, SYSTEM_DEFAULT, SYSTEM_DEFAULT)
    finally:
        old_s.close()
        old_conn.close()


@pytest.mark.parametrize("value, message", [
    ('"no-such-cc"', '"congestion_control" "no-such-cc" is not a congestion control available '
                     'on this host (available: '),
    ('""', '"congestion_control" must not be empty'),
    ('["cubic"]', '"congestion_control" must be a string'),
])
def test_validate_names_the_field(gateway_factory, value, message):
    gw = gateway_factory(start=False)
    text = (gw.config_path.read_text()
            .replace('"audit":', f'"upstream": {{"congestion_control": {value}}}, "audit":', 1))
    gw.config_path.write_text(text)
    r = subprocess.run([gw.bin, "validate", "--config", str(gw.config_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2, r
    assert f"{gw.config_path}:" in r.stderr and message in r.stderr, r.stderr


def test_reload_inside_a_chroot_without_proc(gateway_factory, target):
    """run_as.chroot into a directory without /proc: a reload still validates and applies the
    setting (the kernel's lists as read at start)."""
    import grp
    import json
    import pwd
    import shutil
    import tempfile
    from pamtest import sanitizer_runtimes
    from sgtest import RUN_AS_GROUP, RUN_AS_USER
    root = tempfile.mkdtemp(prefix="socksgate-chroot-")
    try:
        os.chmod(root, 0o755)
        gw = gateway_factory(config=tuned_config(), policy=bind_policy(), start=False)
        inside = Path(root + str(gw.dir))  # where the chrooted gateway finds the same paths
        inside.mkdir(parents=True)
        ids = pwd.getpwnam(RUN_AS_USER).pw_uid, grp.getgrnam(RUN_AS_GROUP).gr_gid
        os.chown(inside, *ids)

        def write(cfg: dict) -> None:
            cfg["run_as"] = {"chroot": root}
            gw.write(config=cfg, policy=bind_policy())
            for f in (gw.config_path, gw.users_path):
                shutil.copy(f, inside / f.name)
                os.chown(inside / f.name, *ids)

        write(tuned_config())
        env = {}
        if any("asan" in lib for lib in sanitizer_runtimes(gw.bin)):
            # LeakSanitizer reads /proc/<pid>/task at exit; the chroot has no /proc.
            env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        gw.start(env=env)
        assert os.readlink(f"/proc/{gw.proc.pid}/root") == root
        assert_new_session_legs(gw, target, CLIENT_CC, UPSTREAM_CC)
        write(tuned_config(client_cc=UPSTREAM_CC, upstream_cc=CLIENT_CC))
        ok, text = gw.reload()
        assert ok, text
        assert_new_session_legs(gw, target, UPSTREAM_CC, CLIENT_CC)
        write(tuned_config(client_cc=None, upstream_cc=None))
        ok, text = gw.reload()
        assert ok, text
        assert_new_session_legs(gw, target, SYSTEM_DEFAULT, SYSTEM_DEFAULT)
        gw.stop()
    finally:
        shutil.rmtree(root)
