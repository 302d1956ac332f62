"""Real PAM for socksgate integration tests: libpam_wrapper + pam_matrix (+ pam_chatty and our
own tests/pam/pam_sgtest module), with service files and a password database written at test
time. Nothing under /etc/pam.d is read or touched.

    stack = PamStack(dirpath, users={"alice": "pw"}); stack.write_service([...lines...])
    gw.start(env=stack.env(gw.bin))
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

PAM_WRAPPER_LIB = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so"
PAM_MODULE_DIR = "/usr/lib/x86_64-linux-gnu/pam_wrapper"
PAM_MATRIX = f"{PAM_MODULE_DIR}/pam_matrix.so"
PAM_CHATTY = f"{PAM_MODULE_DIR}/pam_chatty.so"
# Built by CMake (tests/pam/pam_sgtest.cc); the ctest environment names it.
PAM_SGTEST = os.environ.get("SOCKSGATE_PAM_TEST_MODULE", "")
PAM_NODEEPBIND = os.environ.get("SOCKSGATE_PAM_NODEEPBIND", "")


def sanitizer_runtimes(binary: str) -> list[str]:
    """ASan/TSan runtimes `binary` links against: they must come first in LD_PRELOAD, before
    libpam_wrapper, or the sanitizer refuses to start."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(lib(?:asan|tsan|ubsan)\.so[.\d]*) => (\S+)", line)
        if m:
            libs.append(m.group(2))
    return libs


class PamStack:
    """A pam_wrapper service directory with one service and a pam_matrix passdb."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None,
                 service: str = "socksgate"):
        assert os.path.exists(PAM_WRAPPER_LIB), "libpam-wrapper is not installed"
        assert PAM_SGTEST and os.path.exists(PAM_SGTEST), \
            "SOCKSGATE_PAM_TEST_MODULE must name the built pam_sgtest.so"
        self.dir = Path(workdir)
        self.services = self.dir / "pam.d"
        self.services.mkdir(parents=True, exist_ok=True)
        self.passdb = self.dir / "passdb"
        self.service = service
        self.users: dict[str, str] = {}
        self.write_passdb(users or {})

    def write_passdb(self, users: dict[str, str]) -> None:
        """users: {name: password}; pam_matrix allows them for this service only."""
        self.users = dict(users)
        self.passdb.write_text("".join(f"{u}:{p}:{self.service}\n" for u, p in users.items()))

    def write_service(self, lines: list[str]) -> None:
        (self.services / self.service).write_text("\n".join(lines) + "\n")

    def matrix_service(self, auth_before: list[str] = (), auth_after: list[str] = (),
                       account_after: list[str] = ()) -> None:
        """pam_matrix for auth and account, with extra lines around it."""
        m = f"{PAM_MATRIX} passdb={self.passdb}"
        self.write_service([*auth_before, f"auth required {m}", *auth_after,
                            f"account required {m}", *account_after])

    def env(self, binary: str) -> dict[str, str]:
        runtimes = sanitizer_runtimes(binary)
        preload = [*runtimes, PAM_WRAPPER_LIB]
        if any("tsan" in r for r in runtimes):
            # pam_wrapper dlopens libpam with RTLD_DEEPBIND, which TSan refuses; our shim
            # (tests/pam/nodeepbind.cc) clears the flag. It must see dlopen calls first.
            assert PAM_NODEEPBIND and os.path.exists(PAM_NODEEPBIND), \
                "SOCKSGATE_PAM_NODEEPBIND must name the built sg_nodeepbind.so"
            preload.insert(0, PAM_NODEEPBIND)
        env = {
            "LD_PRELOAD": ":".join(preload),
            "PAM_WRAPPER": "1",
            "PAM_WRAPPER_SERVICE_DIR": str(self.services),
        }
        if runtimes:
            # Newer pam_wrapper versions have a switch for the same problem.
            env["PAM_WRAPPER_DISABLE_DEEPBIND"] = "1"
        return env


def remove_wrapper_dirs(pid: int) -> None:
    """pam_wrapper copies its configuration to /tmp/pam.X in each process that initialises it
    and removes it at exit, which neither a gateway that dropped root (the directory is root's)
    nor a PAM worker (it leaves with _exit) does. Called once process `pid` is gone; also
    removes directories of processes that no longer exist (pam_wrapper's own staleness rule)."""
    import glob
    import shutil
    for d in glob.glob("/tmp/pam.?"):
        try:
            owner = int(Path(d, "pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == pid or not Path(f"/proc/{owner}").exists():
            shutil.rmtree(d, ignore_errors=True)


def pam_config(service: str = "socksgate", **userpass) -> dict:
    """A default gateway config whose userpass back-end is PAM."""
    from sgtest import default_config
    cfg = default_config()
    up = {"backend": "pam", "pam_service": service, "failure_delay_ms": 100,
          "throttle": {"max_failures": 1000, "window_s": 60, "lockout_s": 1}}
    up.update(userpass)
    cfg["auth"] = {"userpass": up}
    return cfg
