"""GSS-API (RFC 1961, method 01) against a throwaway MIT realm: the gateway is the acceptor,
python3-gssapi (MIT's library) the initiator."""

import os
import subprocess

from krb5test import KLIST, REALM


def test_realm_issues_tickets_without_touching_the_host(krb5_realm):
    before = os.stat("/etc/krb5.conf").st_mtime if os.path.exists("/etc/krb5.conf") else None
    env = krb5_realm.kinit("alice")
    out = krb5_realm.klist(env)
    assert f"alice@{REALM}" in out
    assert f"krbtgt/{REALM}@{REALM}" in out
    assert env["KRB5CCNAME"].startswith(f"FILE:{krb5_realm.dir}")
    # A wrong password is refused by the KDC itself.
    bad = krb5_realm.run(["/usr/bin/kinit", f"bob@{REALM}"], input="wrong\n",
                         env=krb5_realm.env(ccache="bob-bad"), check=False)
    assert bad.returncode != 0
    # The service key is in the keytab, nowhere else.
    kt = subprocess.run([KLIST, "-k", str(krb5_realm.keytab)], capture_output=True, text=True,
                        env=krb5_realm.env())
    assert f"rcmd/localhost@{REALM}" in kt.stdout
    after = os.stat("/etc/krb5.conf").st_mtime if os.path.exists("/etc/krb5.conf") else None
    assert before == after
