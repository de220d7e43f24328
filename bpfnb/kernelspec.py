"""The "bpfnb (BPF capabilities)" Jupyter kernel: notebook code runs as an ordinary user
holding only the capabilities BPF needs, started by a root Jupyter server.

``install(user)`` writes the kernelspec (``python -m bpfnb kernelspec --user alice``,
or ``make lab BPFNB_USER=alice``); ``remove()`` takes it away again. The kernelspec runs
this file as root (``python -I .../kernelspec.py --user alice -f {connection_file}``:
alone, importing only the standard library, so the launch costs no bpfnb import), which
hands the kernel its connection file and then becomes, through ``setpriv_argv()``, an
ipykernel running as alice with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN in its ambient
set (kept across exec, so ``!bpftool`` in a cell has them too, and nothing else).

The connection file Jupyter writes is root's (mode 0600 in root's runtime directory).
The launcher copies it into a file it unlinks at once and hands over as an open
descriptor owned by the user (``-f /dev/fd/N``): the HMAC key never reaches a command
line or a path another user could open, and nothing is left to clean up.

tracefs: ``/sys/kernel/tracing`` is root's at mode 0700, so ``tracepoint/`` programs
cannot read their tracepoint ids without root (``tp_btf/`` and ``raw_tp/`` need no
tracefs). ``arrange_tracefs()`` re-mounts it with ``gid=bpfnb,mode=0750``; only the
kernels this module starts get the ``bpfnb`` group, not the user's login sessions.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

TRACEFS = "/sys/kernel/tracing"  # libbpf.sysfs.TRACEFS; this file also runs on its own
NAME = "bpfnb-caps"
DISPLAY_NAME = "bpfnb (BPF capabilities)"
GROUP = "bpfnb"
# CAP_BPF: maps and programs; CAP_PERFMON: tracing programs, perf events, pointer reads;
# CAP_NET_ADMIN: XDP, tc and cgroup_skb. CAP_SYS_RESOURCE is not needed: since Linux 5.11
# BPF memory is charged to the memory cgroup, not to RLIMIT_MEMLOCK.
CAPS = ("bpf", "perfmon", "net_admin")
# Variables that point the kernel at root's files; the launcher sets or drops them.
_ROOT_ENV = ("HOME", "USER", "LOGNAME", "MAIL", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
             "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "IPYTHONDIR",
             "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
             "MPLCONFIGDIR", "SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND")


class KernelSpecError(RuntimeError):
    """The kernelspec cannot be installed or the kernel cannot be started: says why."""


def _user(user: str | int) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        raise KernelSpecError(f"no user {user!r} on this machine (see getent passwd)") from None


def _check_caps(caps) -> tuple[str, ...]:
    caps = tuple(c.lower().removeprefix("cap_") for c in caps)
    bad = [c for c in caps if not c.replace("_", "").isalnum()]
    if bad or not caps:
        raise KernelSpecError(f"capabilities must be names like bpf, perfmon: got {caps}")
    return caps


def tracefs_group() -> int | None:
    """The gid of the ``bpfnb`` group, when it exists."""
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return None


def setpriv_argv(user: str | int, caps=CAPS, groups=None) -> list[str]:
    """setpriv(1) arguments that become ``user`` (uid, gid, its groups, plus ``bpfnb``
    when that group exists) keeping exactly ``caps`` as ambient capabilities (none when
    empty); the command follows. The same list starts the notebook kernel and the test
    suite's children."""
    pw = _user(user)
    caps = _check_caps(caps) if caps else ()
    if groups is None:
        groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
        extra = tracefs_group()
        if extra is not None:
            groups.add(extra)
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    plus = ",".join("+" + c for c in caps) if caps else "-all"
    return [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
            f"--groups={','.join(str(g) for g in sorted(groups))}",
            f"--inh-caps={plus}", f"--ambient-caps={plus}", "--"]


def spec(user: str, caps=CAPS, python: str | None = None) -> dict:
    """The kernel.json of the kernel that runs as ``user`` with ``caps``."""
    pw = _user(user)
    caps = _check_caps(caps)
    python = python or sys.executable
    return {
        "argv": [python, "-I", os.path.abspath(__file__), "--user", pw.pw_name,
                 "--caps", ",".join(caps), "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"bpfnb": {"user": pw.pw_name, "capabilities": list(caps)}},
    }


def kernels_dir(prefix: str | None = None) -> str:
    """Where install() puts kernelspecs: ``prefix``/share/jupyter/kernels (default: this
    Python's prefix, i.e. the .venv that ``make lab`` runs JupyterLab from)."""
    return os.path.join(prefix or sys.prefix, "share", "jupyter", "kernels")


def install(user: str, caps=CAPS, prefix: str | None = None, python: str | None = None,
            tracefs: bool = True) -> str:
    """Install the kernelspec (and, as root with ``tracefs``, the ``bpfnb`` group and the
    tracefs mount that lets it read tracepoint ids); return the kernelspec's directory."""
    pw = _user(user)
    if pw.pw_uid == 0:
        raise KernelSpecError("the point of this kernel is not to be root: name an ordinary "
                              "user (make lab BPFNB_USER=alice)")
    if not shutil.which("setpriv"):
        raise KernelSpecError("setpriv (util-linux) is not installed: "
                              "apt-get install util-linux")
    if tracefs:
        if os.geteuid() != 0:
            raise KernelSpecError("arranging tracefs access needs root: run with sudo, or "
                                  "pass --no-tracefs (tracepoint/ programs then need root)")
        ensure_group()
        arrange_tracefs()
    path = os.path.join(kernels_dir(prefix), NAME)
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, ".kernel.json.tmp")
    with open(tmp, "w") as f:
        json.dump(spec(pw.pw_name, caps, python), f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(path, "kernel.json"))
    return path


def remove(prefix: str | None = None, tracefs: bool = True) -> bool:
    """Remove the kernelspec; as root with ``tracefs``, give tracefs back to root alone
    (when it is the bpfnb group's). True if there was a kernelspec."""
    path = os.path.join(kernels_dir(prefix), NAME)
    found = os.path.isdir(path)
    shutil.rmtree(path, ignore_errors=True)
    gid = tracefs_group()
    if tracefs and os.geteuid() == 0 and gid is not None and tracefs_state()[2] == gid:
        _remount_tracefs(0, 0o700)
    return found


# --- tracefs ---------------------------------------------------------------------------

def tracefs_state(path: str = TRACEFS) -> tuple[int, int, int]:
    """(mode bits, uid, gid) of the tracefs root directory."""
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def ensure_group() -> int:
    """The gid of the ``bpfnb`` system group, created when missing (root only)."""
    gid = tracefs_group()
    if gid is None:
        r = subprocess.run(["groupadd", "--system", GROUP], capture_output=True, text=True)
        gid = tracefs_group()
        if gid is None:
            raise KernelSpecError(f"groupadd --system {GROUP} failed: {r.stderr.strip()}")
    return gid


def arrange_tracefs(gid: int | None = None) -> None:
    """Let group ``gid`` (default: bpfnb) read tracefs: tracepoint ids, formats and
    trace_pipe (its files are 0440/0640, so nothing becomes writable). Lost at reboot:
    README shows the fstab line that keeps it."""
    gid = ensure_group() if gid is None else gid
    mode, _, current = tracefs_state()
    if current == gid and mode & 0o050 == 0o050:
        return
    _remount_tracefs(gid, 0o750)


def _remount_tracefs(gid: int, mode: int) -> None:
    r = subprocess.run(["mount", "-o", f"remount,gid={gid},mode={mode:o}", TRACEFS],
                       capture_output=True, text=True)
    if r.returncode:
        raise KernelSpecError(f"could not re-mount {TRACEFS} with gid={gid},mode={mode:o}: "
                              f"{r.stderr.strip()}")


# --- the launcher (runs as root, as the kernelspec's argv) -----------------------------

def _handover(connection_file: str, pw: pwd.struct_passwd) -> int:
    """An inheritable descriptor of a private, already unlinked copy of the connection
    file, owned by the kernel's user."""
    with open(connection_file, "rb") as f:
        data = f.read()
    fd, tmp = tempfile.mkstemp(prefix="bpfnb-kernel-", suffix=".json")
    try:
        os.unlink(tmp)
        os.write(fd, data)
        os.fchown(fd, pw.pw_uid, pw.pw_gid)
    except BaseException:
        os.close(fd)
        raise
    os.set_inheritable(fd, True)
    return fd


def kernel_env(pw: pwd.struct_passwd, env=None) -> dict:
    env = {k: v for k, v in (os.environ if env is None else env).items()
           if k not in _ROOT_ENV}
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    return env


def launch(user: str, connection_file: str, caps=CAPS) -> None:
    """Become the kernel: exec setpriv -> ipykernel as ``user``. Does not return."""
    if os.geteuid() != 0:
        raise KernelSpecError(f"the {DISPLAY_NAME!r} kernel is started by a root Jupyter "
                              "server (sudo make lab BPFNB_USER=you); started as "
                              f"{_user(os.geteuid()).pw_name} it cannot change user")
    pw = _user(user)
    fd = _handover(connection_file, pw)
    argv = setpriv_argv(pw.pw_name, caps) + [
        sys.executable, "-m", "ipykernel_launcher", "-f", f"/dev/fd/{fd}"]
    os.execve(argv[0], argv, kernel_env(pw))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kernelspec.py",
                                     description="start the bpfnb (BPF capabilities) kernel")
    parser.add_argument("--user", required=True)
    parser.add_argument("--caps", default=",".join(CAPS))
    parser.add_argument("-f", dest="connection_file", required=True)
    args = parser.parse_args(argv)
    try:
        launch(args.user, args.connection_file, args.caps.split(","))
    except (KernelSpecError, OSError) as e:
        print(f"bpfnb kernel: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
