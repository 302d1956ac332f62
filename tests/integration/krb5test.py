"""A throwaway MIT Kerberos realm for one test run, in the spirit of krb5's own k5test.

    realm = Realm(tmpdir)            # kdb5_util create, principals, keytab, krb5kdc on loopback
    env = realm.env(ccache="alice")  # KRB5_CONFIG / KRB5_KDC_PROFILE / KRB5CCNAME / KRB5_KTNAME
    realm.kinit("alice")             # a TGT in the test's own credential cache
    realm.stop()                     # kills only the krb5kdc this object started

Everything lives in the temporary directory: krb5.conf, kdc.conf, the database, the stash,
keytabs, credential caches, replay caches and logs. Nothing on the host is read or written
(/etc/krb5.conf is never consulted: KRB5_CONFIG points at our file, and the environment is
handed to each child process explicitly, never exported into os.environ).

The KDC listens on 127.0.0.1 only, on a port found by binding port 0 and releasing it; if
another process takes the port in between, the KDC fails to start and we retry with another.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REALM = "KRBTEST.COM"
HOST = "localhost"
SERVICE = f"rcmd/{HOST}"

KDB5_UTIL = "/usr/sbin/kdb5_util"
KADMIN_LOCAL = "/usr/sbin/kadmin.local"
KRB5KDC = "/usr/sbin/krb5kdc"
KINIT = "/usr/bin/kinit"
KDESTROY = "/usr/bin/kdestroy"
KLIST = "/usr/bin/klist"

USER_PASSWORDS = {"alice": "alice-Krb-Pw-1", "bob": "bob-Krb-Pw-2"}


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Realm:
    def __init__(self, workdir: Path, realm: str = REALM, users: dict | None = None,
                 start_attempts: int = 10, krb5_libdefaults: dict | None = None):
        # A gateway started as root drops to the run_as user (sgtest.run_as_dir): it must still
        # read krb5.conf and write its replay cache here after the drop.
        from sgtest import RUN_AS_GROUP, RUN_AS_USER, run_as_dir
        self.dir = run_as_dir(Path(workdir))
        self.realm = realm
        self.users = dict(USER_PASSWORDS if users is None else users)
        self.krb5_conf = self.dir / "krb5.conf"
        self.kdc_conf = self.dir / "kdc.conf"
        self.keytab = self.dir / "service.keytab"
        self.kdc_log = self.dir / "kdc.log"
        self.rcache_dir = self.dir / "rcache"
        self.rcache_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            import grp
            import pwd
            os.chown(self.rcache_dir, pwd.getpwnam(RUN_AS_USER).pw_uid,
                     grp.getgrnam(RUN_AS_GROUP).gr_gid)
        self.libdefaults = dict(krb5_libdefaults or {})
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._master = secrets.token_urlsafe(24)

        last = ""
        for _ in range(start_attempts):
            self.port = _free_port()
            self._write_configs()
            if not (self.dir / "principal").exists():
                self._create_db()
            ok, last = self._start_kdc()
            if ok:
                return
        raise AssertionError(f"krb5kdc did not start after {start_attempts} attempts:\n{last}")

    # -- files ------------------------------------------------------------------------------

    def krb5_conf_text(self, **extra_libdefaults) -> str:
        lib = {
            "default_realm": self.realm,
            "dns_lookup_kdc": "false",
            "dns_lookup_realm": "false",
            "dns_canonicalize_hostname": "false",
            "rdns": "false",
            "ignore_acceptor_hostname": "false",
            "udp_preference_limit": "1",  # TCP to the KDC: fewer surprises on a busy machine
            "default_tkt_enctypes": "aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96",
            "default_tgs_enctypes": "aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96",
            # aes256-sha2 (RFC 8009) is permitted but not asked for by default: socksgate leaves
            # its Wrap tokens to MIT, and one test signs on with it on purpose.
            "permitted_enctypes": "aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 "
                                  "aes256-cts-hmac-sha384-192",
        }
        lib.update(self.libdefaults)
        lib.update({k: str(v) for k, v in extra_libdefaults.items()})
        lines = ["[libdefaults]"]
        lines += [f"  {k} = {v}" for k, v in lib.items()]
        lines += [
            "[realms]",
            f"  {self.realm} = {{",
            f"    kdc = 127.0.0.1:{self.port}",
            "  }",
            "[domain_realm]",
            f"  {HOST} = {self.realm}",
            "",
        ]
        return "\n".join(lines)

    def _write_configs(self) -> None:
        self.krb5_conf.write_text(self.krb5_conf_text())
        d = self.dir
        self.kdc_conf.write_text("\n".join([
            "[kdcdefaults]",
            f"  kdc_listen = 127.0.0.1:{self.port}",
            f"  kdc_tcp_listen = 127.0.0.1:{self.port}",
            "[realms]",
            f"  {self.realm} = {{",
            f"    database_name = {d / 'principal'}",
            f"    key_stash_file = {d / 'stash'}",
            f"    acl_file = {d / 'kadm5.acl'}",
            f"    kdc_listen = 127.0.0.1:{self.port}",
            f"    kdc_tcp_listen = 127.0.0.1:{self.port}",
            "    max_life = 1d",
            "    max_renewable_life = 0",
            "    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal"
            " aes256-cts-hmac-sha384-192:normal",
            "  }",
            "[logging]",
            f"  kdc = FILE:{self.kdc_log}",
            f"  admin_server = FILE:{d / 'kadmin.log'}",
            f"  default = FILE:{d / 'krb5lib.log'}",
            "",
        ]))
        (d / "kadm5.acl").write_text("")

    # -- environment ------------------------------------------------------------------------

    def env(self, ccache: str | None = None, keytab: Path | None = None,
            krb5_conf: Path | None = None) -> dict:
        """A full environment for a child process (a copy of ours plus the realm's files)."""
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("KRB5") or k == "KPROP_PORT":
                del e[k]
        e["KRB5_CONFIG"] = str(krb5_conf or self.krb5_conf)
        e["KRB5_KDC_PROFILE"] = str(self.kdc_conf)
        e["KRB5_KTNAME"] = f"FILE:{keytab or self.keytab}"
        e["KRB5RCACHEDIR"] = str(self.rcache_dir)
        e["KRB5_TRACE"] = str(self.dir / "trace.log") if os.environ.get("SG_KRB5_TRACE") else ""
        if not e["KRB5_TRACE"]:
            del e["KRB5_TRACE"]
        e["KRB5CCNAME"] = f"FILE:{self.ccache_path(ccache or 'default')}"
        return e

    def ccache_path(self, name: str) -> Path:
        return self.dir / f"ccache.{name}"

    # -- setup ------------------------------------------------------------------------------

    def run(self, args: list, input: str | None = None, env: dict | None = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        res = subprocess.run(args, input=input, capture_output=True, text=True,
                             env=env or self.env(), timeout=timeout, cwd=self.dir)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    def kadmin(self, query: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([KADMIN_LOCAL, "-r", self.realm, "-q", query], check=check)

    def _create_db(self) -> None:
        self.run([KDB5_UTIL, "-r", self.realm, "create", "-s", "-P", self._master])
        for user, pw in self.users.items():
            self.add_user(user, pw)
        self.add_service(SERVICE, self.keytab)

    def add_user(self, name: str, password: str, extra: str = "") -> None:
        self.kadmin(f"addprinc {extra} -pw {password} {name}")
        self.users[name] = password

    def add_service(self, name: str, keytab: Path) -> None:
        """A service principal with a random key, exported to `keytab` (a FILE: keytab)."""
        self.kadmin(f"addprinc -randkey {name}")
        self.kadmin(f"ktadd -k {keytab} {name}")

    def export_keytab(self, name: str, keytab: Path) -> None:
        """Adds `name`'s keys to another keytab without changing them (-norandkey)."""
        self.kadmin(f"ktadd -norandkey -k {keytab} {name}")

    def _start_kdc(self) -> tuple[bool, str]:
        log = open(self.dir / "krb5kdc.stderr", "wb")
        self.proc = subprocess.Popen([KRB5KDC, "-n", "-r", self.realm], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, env=self.env(), cwd=self.dir)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                why = (self.dir / "krb5kdc.stderr").read_text(errors="replace")
                why += self.kdc_log.read_text(errors="replace") if self.kdc_log.exists() else ""
                self.proc = None
                return False, why
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                text = self.kdc_log.read_text(errors="replace") if self.kdc_log.exists() else ""
                if "commencing operation" in text:
                    return True, ""
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        return False, "krb5kdc did not listen within 30s"

    # -- users ------------------------------------------------------------------------------

    def kinit(self, user: str, ccache: str | None = None, lifetime: str | None = None,
              password: str | None = None) -> dict:
        """Gets a TGT for `user` with the password; returns the environment that uses it."""
        env = self.env(ccache=ccache or user)
        args = [KINIT]
        if lifetime:
            args += ["-l", lifetime]
        args += [f"{user}@{self.realm}"]
        self.run(args, input=(password or self.users[user]) + "\n", env=env)
        return env

    def klist(self, env: dict) -> str:
        return self.run([KLIST], env=env).stdout

    # -- teardown ---------------------------------------------------------------------------

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
