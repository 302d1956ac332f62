"""policy.d: per-user and per-group rule files, precedence, reload."""

import json

import pytest

from sgtest import SocksError, default_config, socks_connect


def write_dir(gw, files: dict):
    d = gw.dir / "policy.d"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    for name, body in files.items():
        (d / name).write_text(json.dumps(body, indent=2))


def config_with_dir():
    cfg = default_config()
    cfg["policy"] = {"file": "policy.json", "dir": "policy.d"}
    return cfg


def test_user_file_grants_and_reload_picks_it_up(gateway_factory, echo_server):
    gw = gateway_factory(config=config_with_dir(), start=False)
    (gw.dir / "policy.json").write_text(json.dumps({"rules": [
        {"id": "global-block-echo", "action": "block", "to": ["127.0.0.1"],
         "ports": [echo_server.port]}]}))
    write_dir(gw, {})
    gw.start()
    with pytest.raises(SocksError) as e:
        socks_connect(gw.addr(), "alice", gw.passwords["alice"], "127.0.0.1", echo_server.port)
    assert e.value.data == 2
    # alice's own file comes before the global block; bob's group file does not apply to her.
    write_dir(gw, {
        "alice.json": {"rules": [{"id": "alice-echo", "action": "pass",
                                  "to": ["127.0.0.1"], "ports": [echo_server.port]}]},
        "group-ops.json": {"rules": [{"id": "ops-echo", "action": "pass"}]},
    })
    ok, line = gw.reload()
    assert ok, line
    s, _ = socks_connect(gw.addr(), "alice", gw.passwords["alice"], "127.0.0.1", echo_server.port)
    s.close()
    rec = gw.wait_session_end(user="alice", rule="alice-echo")
    assert rec["decision"] == "pass"
    with pytest.raises(SocksError):
        socks_connect(gw.addr(), "bob", gw.passwords["bob"], "127.0.0.1", echo_server.port)


def test_bad_user_file_keeps_the_running_policy(gateway_factory, echo_server):
    gw = gateway_factory(config=config_with_dir(), start=False)
    (gw.dir / "policy.json").write_text(json.dumps({"rules": []}))
    write_dir(gw, {"alice.json": {"rules": [{"id": "alice-echo", "action": "pass",
                                             "to": ["127.0.0.1"]}]}})
    gw.start()
    write_dir(gw, {"alice.json": {"rules": [{"id": "alice-echo", "action": "pass",
                                             "users": ["bob"]}]}})
    ok, line = gw.reload()
    assert not ok and "alice.json" in line, line
    s, _ = socks_connect(gw.addr(), "alice", gw.passwords["alice"], "127.0.0.1", echo_server.port)
    s.close()
