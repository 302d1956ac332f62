"""pytest fixtures for socksgate integration tests (helpers live in sgtest.py).

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration
The binary comes from $SOCKSGATE_BIN (default /work/main/build/gateway/socksgate).
"""

import pytest

from krb5test import Realm
from sgtest import EchoServer, Gateway, HttpServer, Target


@pytest.fixture
def gateway_factory(tmp_path):
    """make(name="gw", config=..., users=..., policy=..., start=True, env=None) -> Gateway."""
    made: list[Gateway] = []

    def make(name: str = "gw", start: bool = True, env: dict | None = None, **kw) -> Gateway:
        g = Gateway(tmp_path / name)
        g.env = env
        g.write(**kw)
        made.append(g)
        if start:
            g.start()
        return g

    yield make
    problems = []
    for g in made:
        problems += g.teardown()
    assert not problems, "\n".join(problems)


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    """A running gateway with the default config, users alice and bob."""
    return gateway_factory()


@pytest.fixture(scope="module")
def http_server():
    s = HttpServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def echo_server():
    s = EchoServer()
    yield s
    s.close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()



@pytest.fixture(scope="module")
def krb5_realm(tmp_path_factory):
    """A throwaway MIT realm (KRBTEST.COM) with a KDC on loopback, users alice and bob,
    rcmd/localhost in realm.keytab. Only the krb5kdc it started is stopped afterwards."""
    realm = Realm(tmp_path_factory.mktemp("krb5"))
    yield realm
    realm.stop()
