"""Outbound (external) addresses: listener "external" and rule "egress", IPs or interface
names; listener addresses given as interface names."""

import subprocess

from sgtest import default_config, default_policy, socks_connect


def test_rule_egress_sets_the_source_address(gateway_factory, target):
    p = default_policy()
    p["rules"][0]["egress"] = "127.0.0.2"
    gw = gateway_factory(policy=p)
    s, (baddr, bport) = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"],
                                      "127.0.0.1", target.port)
    conn, peer = target.accept()
    assert peer[0] == "127.0.0.2", "the upstream connection comes from the rule's egress"
    assert (baddr, bport) == peer[:2], "BND is the upstream socket's local address"
    s.close()
    conn.close()
    end = gw.wait_session_end(rule="alice-local")
    assert end["bound"] == f"127.0.0.2:{bport}"


def test_listener_external_by_interface_name(gateway_factory, target):
    c = default_config()
    c["listeners"][0]["external"] = "lo"  # the loopback interface: 127.0.0.1 / ::1
    gw = gateway_factory(config=c)
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         target.port)
    conn, peer = target.accept()
    assert peer[0] == "127.0.0.1"
    s.close()
    conn.close()


def test_listener_address_by_interface_name(gateway_factory, echo_server):
    c = default_config()
    c["listeners"][0]["address"] = "lo"
    gw = gateway_factory(config=c)
    assert gw.listener("main")["address"] == "127.0.0.1"
    s, _ = socks_connect(gw.addr("main"), "alice", gw.passwords["alice"], "127.0.0.1",
                         echo_server.port)
    s.close()


def test_unknown_interface_names_are_config_errors(gateway_factory):
    c = default_config()
    c["listeners"][0]["external"] = "nosuchif0"
    p = default_policy()
    p["rules"][0]["egress"] = "nosuchif1"
    gw = gateway_factory(config=c, policy=p, start=False)
    r = subprocess.run([gw.bin, "validate", "--config", str(gw.config_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "\"nosuchif0\" is not a usable address for \"external\"" in r.stderr
    c["listeners"][0]["external"] = "127.0.0.1"
    gw2 = gateway_factory(name="gw2", config=c, policy=p, start=False)
    r = subprocess.run([gw2.bin, "validate", "--config", str(gw2.config_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "a rule's \"egress\": \"nosuchif1\"" in r.stderr


def test_rule_egress_is_where_bind_listens(gateway_factory):
    from sgtest import connect_tcp, read_reply
    from test_bind import bind_config, bind_policy, start_bind
    p = bind_policy()
    p["rules"][0]["egress"] = "127.0.0.3"
    gw = gateway_factory(config=bind_config(), policy=p)
    s, (rep, addr, port) = start_bind(gw, "127.0.0.1")
    assert rep == 0 and addr == "127.0.0.3"
    peer = connect_tcp((addr, port))
    rep2, _, _ = read_reply(s)
    assert rep2 == 0
    peer.close()
    s.close()


def test_rule_egress_is_the_udp_relays_source(gateway_factory):
    from test_udp import UdpEcho, associate, roundtrip, udp_config, udp_policy, udp_socket
    p = udp_policy(to=("127.0.0.1/32",))
    p["rules"][0]["egress"] = "127.0.0.4"
    gw = gateway_factory(config=udp_config(), policy=p)
    echo = UdpEcho("127.0.0.1")
    ctl, (rep, _, bport) = associate(gw)
    assert rep == 0
    u = udp_socket("127.0.0.1")
    try:
        roundtrip(u, ("127.0.0.1", bport), "127.0.0.1", echo.port, b"from egress")
        assert [s[0] for s in echo.senders()] == ["127.0.0.4"]
    finally:
        u.close()
        echo.close()
        ctl.close()
