"""The tamper-evident audit log, end to end with the real gateway (docs/audit.md).

Every test here validates every record it produced against docs/audit.schema.json and checks
the chain with `socksgate audit verify` and with the Python snippet printed in docs/audit.md.
"""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sgtest import run_as_dir
from sgtest import (RUN_AS_GROUP, RUN_AS_USER, IO_TIMEOUT, SocksError, assert_audit_schema, audit_verify, connect_tcp,
                    default_config, default_policy, echo_roundtrip, greeting, local_port,
                    read_reply, recv_exact, request, socks_connect, unescape_untrusted,
                    userpass)

DOCS = Path(__file__).resolve().parents[2] / "docs"
CMD_UDP = 3


def doc_verify():
    """The `verify` function of the Python snippet in docs/audit.md, executed as printed."""
    text = (DOCS / "audit.md").read_text()
    m = re.search(r"<!-- verify-snippet-start -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/audit.md lost its verify snippet"
    ns: dict = {}
    exec(compile(m.group(1), "docs/audit.md", "exec"), ns)
    return ns["verify"]


def check_log(*files, key=None, rc=0):
    """Schema of every record, `socksgate audit verify` and the documented snippet."""
    for f in files:
        lines = Path(f).read_text().splitlines()
        assert_audit_schema(lines)
    res = audit_verify(*files, key=key)
    assert res.returncode == rc, f"verify exit {res.returncode}\n{res.stdout}{res.stderr}"
    if rc == 0:
        k = Path(key).read_bytes().rstrip(b"\r\n") if key else None
        last = None
        for f in files:
            last = doc_verify()(str(f), k)
        assert f"last hash {last['hash']}" in res.stdout, res.stdout
    return res


def started(gw, **fields):
    return [r for r in gw.audit() if r.get("event") == "session_start" and
            all(r.get(k) == v for k, v in fields.items())]


def udp_policy():
    p = default_policy()
    p["rules"].insert(0, {"id": "alice-udp", "action": "pass", "users": ["alice"],
                          "commands": ["udp"], "to": ["127.0.0.0/8"]})
    return p


def associate(gw, dst=("0.0.0.0", 0)):
    s = connect_tcp(gw.addr("main"))
    s.sendall(greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    s.sendall(userpass("alice", gw.passwords["alice"]))
    assert recv_exact(s, 2) == b"\x01\x00"
    s.sendall(request(dst[0], dst[1], cmd=CMD_UDP))
    return s, read_reply(s)


def test_session_start_is_on_disk_before_the_reply(gateway_factory, echo_server):
    """A slow commit delay for ordinary records must not delay (or skip) session_start."""
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "commit_delay_ms": 1000}
    gw = gateway_factory(config=cfg)
    for _ in range(5):
        s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                             echo_server.port)
        # The reply came: the record is already in the file.
        recs = started(gw, client_port=local_port(s))
        assert len(recs) == 1, gw.audit_lines()
        assert recs[0]["user"] == "alice" and recs[0]["rule"] == "alice-local"
        assert recs[0]["decision"] == "pass" and recs[0]["command"] == "connect"
        s.close()
    gw.wait_audit(lambda r: r.get("event") == "session_end", 5)
    gw.stop()
    check_log(gw.audit_path)


def test_all_event_kinds_match_schema_and_verify(gateway_factory, echo_server):
    gw = gateway_factory(policy=udp_policy())
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    assert echo_roundtrip(s, b"x" * 1000) == b"x" * 1000
    s.close()
    with pytest.raises(SocksError):  # auth_failure
        socks_connect(gw.addr("main"), "alice", "wrong", "127.0.0.1", echo_server.port)
    with pytest.raises(SocksError):  # denied
        socks_connect(gw.addr("main"), "bob", gw.passwords["bob"], "127.0.0.1", echo_server.port)
    ctl, (rep, _, _) = associate(gw)  # UDP ASSOCIATE: session_start with the relay address
    assert rep == 0
    ctl.close()
    gw.wait_audit(lambda r: r.get("event") == "session_end", 4)
    gw.stop()
    recs = gw.audit()
    events = [r["event"] for r in recs]
    for e in ("audit_start", "session_start", "session_end", "auth_failure", "denied"):
        assert e in events, events
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    # Each session_start comes before its session_end and carries the same session facts.
    for st in (r for r in recs if r["event"] == "session_start"):
        end = [r for r in recs if r["event"] == "session_end" and r["session"] == st["session"]]
        assert len(end) == 1 and end[0]["seq"] > st["seq"]
        for k in ("user", "client", "client_port", "command", "host", "port", "rule", "bound",
                  "start"):
            assert st.get(k) == end[0].get(k), (k, st, end[0])
    check_log(gw.audit_path)


NASTY = [b'ev"il\'\x01\x07\x1b[31m\t\n\r', b"\\x41\\\\", b"\xff\xfe\xc0\xaf", b"\x7fend\x1f",
         "é€𝄞".encode() + b"\xed\xa0\x80\xf4\x90\x80\x80", b"{\"seq\":1}\n{", b"\"}\n"]


def test_untrusted_names_stay_one_valid_line_and_round_trip(gateway_factory):
    """Host names with control bytes, quotes and invalid UTF-8 in session_start/session_end
    (UDP ASSOCIATE takes a name as DST), and user names in auth_failure."""
    gw = gateway_factory(policy=udp_policy())
    ports = {}
    for name in NASTY:
        ctl, (rep, _, _) = associate(gw, dst=(name, 5000))
        assert rep == 0
        ports[local_port(ctl)] = name
        ctl.close()
        s = connect_tcp(gw.addr("main"))
        s.sendall(greeting((2,)) + userpass(name + b"-user", "pw"))
        assert recv_exact(s, 4) == b"\x05\x02\x01\x01"
        s.close()
    gw.wait_audit(lambda r: r.get("event") == "session_end", 2 * len(NASTY))
    gw.stop()
    raw = gw.audit_path.read_bytes()
    raw.decode("utf-8")  # strict
    for line in raw.split(b"\n")[:-1]:
        assert not any(c < 0x20 for c in line), line
    for port, name in ports.items():
        st = started(gw, client_port=port)
        end = [r for r in gw.session_ends() if r["client_port"] == port]
        assert len(st) == 1 and len(end) == 1
        assert unescape_untrusted(st[0]["host"]) == name
        assert unescape_untrusted(end[0]["host"]) == name
    fails = [r for r in gw.audit() if r["event"] == "auth_failure"]
    assert sorted(unescape_untrusted(r["user"]) for r in fails) == sorted(n + b"-user" for n in NASTY)
    check_log(gw.audit_path)


def test_kill9_under_load_loses_no_started_session(gateway_factory, echo_server):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "commit_delay_ms": 200}
    gw = gateway_factory(config=cfg)
    replied: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"],
                                     "127.0.0.1", echo_server.port, timeout=5)
            except (OSError, SocksError, EOFError):
                continue
            with lock:
                replied.append(local_port(s))
            s.close()

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(replied) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(timeout=10)
    gw._stopped = True
    stop.set()
    for t in threads:
        t.join(timeout=30)
    with lock:
        got = list(replied)
    assert len(got) >= 200, len(got)
    lines = gw.audit_lines()
    ports = {json.loads(l).get("client_port") for l in lines
             if json.loads(l)["event"] == "session_start"}
    missing = [p for p in got if p not in ports]
    assert not missing, f"{len(missing)} of {len(got)} sessions got a success reply " \
                        "without a durable session_start"
    # session_end records that were still queued are lost: that is what the delay allows.
    ends = sum(1 for l in lines if json.loads(l)["event"] == "session_end")
    assert ends <= len(ports)
    # The killed log verifies (or ends in a partial line, which verify names exactly).
    res = audit_verify(gw.audit_path)
    assert res.returncode == 0 or "truncated tail" in res.stderr, res.stderr
    # A restart continues the chain (cutting a partial line off as a gap).
    gw.proc = None
    gw._stopped = False
    gw.start()
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()
    gw.stop()
    events = [r["event"] for r in gw.audit()]
    assert events.count("audit_start") == 1
    assert "audit_resume" in events or "audit_gap" in events
    check_log(gw.audit_path, rc=0 if res.returncode == 0 else 4)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (we run as root): a real "No space left on device"."""
    # In a directory the gateway's run_as user can reach: after the privilege drop it reopens
    # the file when it recovers.
    mnt = run_as_dir(tmp_path / "disk-parent") / "disk"
    mnt.mkdir()
    ids = f"uid={pwd.getpwnam(RUN_AS_USER).pw_uid},gid={grp.getgrnam(RUN_AS_GROUP).gr_gid}"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,mode=0700,{ids}", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs (the test needs root): {r.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path) -> Path:
    """Fills the file system that holds `path` until ENOSPC."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC
    return filler


def try_session(gw, port):
    """(REP, client port) of one CONNECT by alice."""
    s = connect_tcp(gw.addr("main"))
    try:
        s.sendall(greeting((2,)) + userpass("alice", gw.passwords["alice"]) +
                  request("127.0.0.1", port))
        assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
        return read_reply(s)[0], local_port(s)
    finally:
        s.close()


@pytest.mark.parametrize("mode", ["fail-closed", "fail-open"])
def test_full_disk_refuses_new_sessions_and_recovers(gateway_factory, echo_server, small_disk,
                                                      mode):
    cfg = default_config()
    cfg["audit"] = {"file": str(small_disk / "audit.jsonl"), "on_failure": mode}
    gw = gateway_factory(config=cfg)
    gw.audit_path = small_disk / "audit.jsonl"
    assert try_session(gw, echo_server.port)[0] == 0
    filler = fill(small_disk)
    # The file's last page may still hold a few records; then every new session fails.
    reps = []
    for _ in range(200):
        rep, _ = try_session(gw, echo_server.port)
        reps.append(rep)
        if reps[-3:] == [1, 1, 1] or (mode == "fail-open" and "WITHOUT" in gw.log_text()):
            break
    if mode == "fail-closed":
        assert reps[-3:] == [1, 1, 1], reps  # REP 01 general failure
        assert "new sessions are refused" in gw.log_text()
        assert "refused: the audit log cannot be written" in gw.log_text()
    else:
        assert set(reps) == {0}, reps  # sessions proceed, and the log says so loudly
        assert "sessions proceed WITHOUT a durable audit record" in gw.log_text()
        for _ in range(3):
            assert try_session(gw, echo_server.port)[0] == 0
    filler.unlink()
    # Space is back: sessions succeed again (the writer retries every 250 ms and per record).
    deadline = time.monotonic() + IO_TIMEOUT
    while try_session(gw, echo_server.port)[0] != 0:
        assert time.monotonic() < deadline, "no recovery after space came back"
        time.sleep(0.05)
    rep, port = try_session(gw, echo_server.port)
    assert rep == 0
    gw.stop()
    assert "writable again" in gw.log_text()
    recs = gw.audit()
    gaps = [r for r in recs if r["event"] == "audit_gap"]
    # On a nearly full disk a small write can fit between two failures: one gap per outage.
    assert gaps and all(g["reason"] == "write_failed" for g in gaps), gaps
    assert all(g["lost"] >= 1 and "No space left on device" in g["error"] for g in gaps), gaps
    assert started(gw, client_port=port)
    res = check_log(gw.audit_path, rc=4)
    assert re.search(rf"record \d+ \(seq {gaps[0]['seq']}\): gap: {gaps[0]['lost']} records lost",
                     res.stderr), res.stderr


def test_sigusr1_reopens_for_rotation(gateway, echo_server):
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()
    gateway.wait_audit(lambda r: r.get("event") == "session_end")
    rotated = gateway.dir / "audit.jsonl.1"
    os.rename(gateway.audit_path, rotated)
    gateway.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + IO_TIMEOUT
    while not gateway.audit_path.exists():
        assert time.monotonic() < deadline, gateway.log_text()
        time.sleep(0.02)
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()
    gateway.wait_audit(lambda r: r.get("event") == "session_end")
    gateway.stop()
    new = gateway.audit()
    old = [json.loads(l) for l in rotated.read_text().splitlines()]
    assert new[0]["event"] == "audit_segment"
    assert new[0]["seq"] == old[-1]["seq"] + 1 and new[0]["prev"] == old[-1]["hash"]
    assert "reopening the audit log" in gateway.log_text()
    check_log(rotated, gateway.audit_path)
    check_log(gateway.audit_path)  # a segment verifies on its own too
    assert audit_verify(gateway.audit_path, rotated).returncode != 0  # order matters


def test_restart_continues_the_chain(gateway, echo_server):
    gateway.stop()
    gateway.proc = None
    gateway._stopped = False
    gateway.start()
    s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()
    gateway.wait_audit(lambda r: r.get("event") == "session_end")
    gateway.stop()
    events = [r["event"] for r in gateway.audit()]
    assert events[:2] == ["audit_start", "audit_resume"], events
    check_log(gateway.audit_path)


def write_key(path: Path, fill: bytes) -> Path:
    path.write_bytes(fill * 40 + b"\n")
    path.chmod(0o600)
    return path


def test_keyed_log_with_epochs(gateway_factory, echo_server, tmp_path):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "key_file": "audit.key", "epoch_records": 3}
    gw = gateway_factory(config=cfg, start=False)
    key = write_key(gw.dir / "audit.key", b"k")
    gw.start()
    for _ in range(4):
        s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                             echo_server.port)
        s.close()
    gw.wait_audit(lambda r: r.get("event") == "session_end", 4)
    gw.stop()
    recs = gw.audit()
    assert recs[0]["chain"] == "hmac-sha256"
    assert [r["epoch"] for r in recs] == [i // 3 for i in range(len(recs))]
    check_log(gw.audit_path, key=key)
    nokey = audit_verify(gw.audit_path)
    assert nokey.returncode == 2 and "--key" in nokey.stderr
    wrong = audit_verify(gw.audit_path, key=write_key(tmp_path / "wrong.key", b"w"))
    assert wrong.returncode == 1 and "record 1 (seq 1): HMAC does not match" in wrong.stderr
    # Someone without the key rewrites a record and recomputes a plain SHA-256 chain: caught.
    lines = gw.audit_lines()
    rec = json.loads(lines[3])
    rec["user"] = "mallory"
    lines[3] = json.dumps(rec, separators=(",", ":"))
    gw.audit_path.write_text("\n".join(lines) + "\n")
    res = audit_verify(gw.audit_path, key=key)
    assert res.returncode == 1 and "record 4 (seq 4): HMAC does not match" in res.stderr


def test_key_file_readable_by_others_is_refused(gateway_factory):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "key_file": "audit.key"}
    gw = gateway_factory(config=cfg, start=False)
    key = write_key(gw.dir / "audit.key", b"k")
    key.chmod(0o644)
    with pytest.raises(AssertionError, match="must not be readable by group or others"):
        gw.start()
    gw._stopped = True


def test_syslog_output(gateway_factory, echo_server, tmp_path):
    sock_path = run_as_dir(tmp_path / "syslog") / "log.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(sock_path))
    os.chmod(sock_path, 0o666)  # the gateway sends as its run_as user
    rx.settimeout(IO_TIMEOUT)
    try:
        cfg = default_config()
        cfg["audit"] = {"file": "audit.jsonl", "syslog": "local3",
                        "syslog_socket": str(sock_path)}
        gw = gateway_factory(config=cfg)
        s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                             echo_server.port)
        s.close()
        gw.wait_audit(lambda r: r.get("event") == "session_end")
        got = []
        while len(got) < 3:
            got.append(rx.recv(65536))
    finally:
        rx.close()
    gw.stop()
    lines = gw.audit_lines()
    for msg in got:
        # local3 (19) * 8 + info (6) = 158
        m = re.fullmatch(rb"<158>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d socksgate\[(\d+)\]: (.*)",
                         msg, re.S)
        assert m, msg
        assert int(m.group(1)) == gw.proc.pid
        assert m.group(2).decode() in lines
    assert [json.loads(m.split(b"]: ", 1)[1])["event"] for m in got] == \
        ["audit_start", "session_start", "session_end"]


def test_stdout_output(gateway_factory, echo_server):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "stdout": True}
    gw = gateway_factory(config=cfg)
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()
    gw.wait_audit(lambda r: r.get("event") == "session_end")
    gw.stop()
    out = gw.log_text()  # the gateway's stdout and stderr
    for line in gw.audit_lines():
        assert line in out


def test_per_user_files(gateway_factory, echo_server):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "per_user_dir": "users"}
    gw = gateway_factory(config=cfg, start=False)
    (gw.dir / "users").mkdir()
    os.chown(gw.dir / "users", pwd.getpwnam(RUN_AS_USER).pw_uid, grp.getgrnam(RUN_AS_GROUP).gr_gid)
    gw.start()
    for _ in range(2):
        s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                             echo_server.port)
        s.close()
    with pytest.raises(SocksError):
        socks_connect(gw.addr("main"), "bob", gw.passwords["bob"], "127.0.0.1", echo_server.port)
    with pytest.raises(SocksError):
        socks_connect(gw.addr("main"), "mallory", "x", "127.0.0.1", echo_server.port)
    gw.wait_audit(lambda r: r.get("event") == "session_end", 4)
    gw.stop()
    alice = [json.loads(l) for l in (gw.dir / "users" / "alice.jsonl").read_text().splitlines()]
    assert alice[0]["event"] == "audit_start"
    # Two sessions (they may overlap): each starts before it ends.
    assert sorted(r["event"] for r in alice[1:]) == ["session_end"] * 2 + ["session_start"] * 2
    for sid in {r["session"] for r in alice[1:]}:
        assert [r["event"] for r in alice if r.get("session") == sid] == \
            ["session_start", "session_end"]
    assert all(r.get("user", "alice") == "alice" for r in alice)
    bob = [json.loads(l)["event"] for l in (gw.dir / "users" / "bob.jsonl").read_text().splitlines()]
    assert bob == ["audit_start", "denied", "session_end"]
    assert not (gw.dir / "users" / "mallory.jsonl").exists(), "a claimed name made a file"
    check_log(gw.dir / "users" / "alice.jsonl")
    check_log(gw.dir / "users" / "bob.jsonl")
    check_log(gw.audit_path)


@pytest.mark.parametrize("audit,message", [
    ({"on_failure": "ignore"}, '"on_failure" must be "fail-closed" or "fail-open"'),
    ({"syslog": "kern"}, '"syslog" must be true, false or a facility'),
    ({"commit_delay_ms": 5000}, '"commit_delay_ms" must be between 0 and 1000'),
    ({"epoch_records": 0}, '"epoch_records" must be between 1'),
    ({"rotate": True}, 'unknown key "rotate"'),
])
def test_config_errors(gateway_factory, audit, message):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", **audit}
    gw = gateway_factory(config=cfg, start=False)
    res = subprocess.run([gw.bin, "validate", "--config", str(gw.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res
    assert re.search(r"socksgate\.json:\d+:\d+: .*" + re.escape(message), res.stderr), res.stderr


def test_verify_cli_usage():
    assert audit_verify().returncode == 2
    res = audit_verify("/nonexistent/audit.jsonl")
    assert res.returncode == 2 and "cannot read" in res.stderr


def test_validate_checks_key_file_and_per_user_dir(gateway_factory):
    cfg = default_config()
    cfg["audit"] = {"file": "audit.jsonl", "key_file": "missing.key", "per_user_dir": "nodir"}
    gw = gateway_factory(config=cfg, start=False)
    res = subprocess.run([gw.bin, "validate", "--config", str(gw.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res
    assert re.search(r"socksgate\.json:\d+:\d+: .*missing\.key: cannot open audit key file",
                     res.stderr), res.stderr
    assert re.search(r"socksgate\.json:\d+:\d+: .*nodir: not an existing directory",
                     res.stderr), res.stderr


def test_docs_example_is_a_valid_chained_log(tmp_path):
    text = (DOCS / "audit.md").read_text()
    m = re.search(r"## Example.*?```json\n(.*?)```", text, re.S)
    assert m, "docs/audit.md lost its example"
    f = tmp_path / "example.jsonl"
    f.write_text(m.group(1))
    check_log(f)


def test_reload_never_forks_a_chain(gateway, echo_server):
    """Reloads that change audit settings, move the log away and back while a session still
    holds the old log: every file keeps one chain."""
    held, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"],
                            "127.0.0.1", echo_server.port)
    cfg = default_config()
    for audit in ({"file": "audit.jsonl", "stdout": True, "commit_delay_ms": 0},
                  {"file": "audit-2.jsonl"},
                  {"file": "audit.jsonl"}):
        cfg["audit"] = audit
        gateway.config_path.write_text(json.dumps(cfg))
        ok, line = gateway.reload()
        assert ok, line
        s, _ = socks_connect(gateway.addr("main"), "alice", gateway.passwords["alice"],
                             "127.0.0.1", echo_server.port)
        s.close()
    held.close()
    gateway.wait_audit(lambda r: r.get("event") == "session_end", 3)
    gateway.stop()
    events = [r["event"] for r in gateway.audit()]
    assert events.count("audit_start") == 1, events
    assert events.count("session_start") == 3 and events.count("session_end") == 3, events
    check_log(gateway.audit_path)
    check_log(gateway.dir / "audit-2.jsonl")
