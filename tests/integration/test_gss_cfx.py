"""socksgate's RFC 4121 Wrap tokens on OpenSSL (crypto/gss_cfx.cc) against MIT krb5.

Runs the gtest binary gss_cfx_test (tests/unit/crypto/gss_cfx_test.cc) inside a real realm: for
each enctype socksgate computes itself, the realm's krb5.conf is narrowed to that enctype, alice
gets a fresh TGT, and the binary checks tokens both ways between CfxProtector and MIT's
gss_wrap/gss_unwrap on contexts it establishes with the KDC.
"""

import os
import subprocess

import pytest

ENCTYPES = {
    "aes128-cts-hmac-sha1-96": 17,
    "aes256-cts-hmac-sha1-96": 18,
}


@pytest.mark.parametrize("name", sorted(ENCTYPES))
def test_cfx_tokens_interoperate_with_mit(krb5_realm, name):
    binary = os.environ.get("SOCKSGATE_GSS_CFX_TEST")
    assert binary and os.path.exists(binary), "SOCKSGATE_GSS_CFX_TEST must name gss_cfx_test"
    conf = krb5_realm.dir / f"krb5.{name}.conf"
    # The session key (and so every subkey) is of the enctype asked for in the TGS request;
    # the service ticket itself stays under the service's strongest key, which the acceptor
    # (same process, same krb5.conf) must still be permitted to decrypt.
    conf.write_text(krb5_realm.krb5_conf_text(default_tkt_enctypes=name, default_tgs_enctypes=name))
    ccache = f"cfx-{name}"
    env = krb5_realm.env(ccache=ccache, krb5_conf=conf)
    krb5_realm.run(["kinit", f"alice@{krb5_realm.realm}"],
                   input=krb5_realm.users["alice"] + "\n", env=env)
    env["SGTEST_ENCTYPE"] = str(ENCTYPES[name])
    res = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "[  PASSED  ]" in res.stdout and "FAILED" not in res.stdout, res.stdout[-3000:]
