"""The pseudo file systems BPF needs: tracefs (tracepoint ids) and bpffs (pinning)."""

from __future__ import annotations

import ctypes
import os

TRACEFS = "/sys/kernel/tracing"
BPFFS = "/sys/fs/bpf"


def _mounted(path: str, fstype: str) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1:3] == [path, fstype] for line in f)
    except OSError:
        return False


def _mount(path: str, fstype: str) -> str | None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_void_p]
    if libc.mount(b"nodev", path.encode(), fstype.encode(), 0, None) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def ensure(path: str, fstype: str) -> tuple[bool, str]:
    """(mounted now, what happened) for ``fstype`` at ``path``; mounts it when allowed."""
    if _mounted(path, fstype):
        return True, f"{fstype} is mounted at {path}"
    if os.geteuid() != 0:
        return False, (f"{fstype} is not mounted at {path}; as root run: "
                       f"mount -t {fstype} nodev {path}")
    err = _mount(path, fstype)
    if err:
        return False, (f"{fstype} is not mounted at {path} and mounting it failed ({err}); "
                       f"try: mount -t {fstype} nodev {path}")
    return True, f"mounted {fstype} at {path}"


def ensure_tracefs() -> tuple[bool, str]:
    return ensure(TRACEFS, "tracefs")


def ensure_bpffs() -> tuple[bool, str]:
    return ensure(BPFFS, "bpf")


def cgroup2_mount() -> str | None:
    """Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid
    set-ups), or None."""
    found = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    found.append(parts[1])
    except OSError:
        return None
    if "/sys/fs/cgroup" in found:
        return "/sys/fs/cgroup"
    return found[0] if found else None
