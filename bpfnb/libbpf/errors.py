"""Exceptions that carry errno, the libbpf log and, for rejections, the verifier log."""

from __future__ import annotations

import ctypes
import errno as _errno
import grp
import os
import pwd
import re
import stat

from .sysfs import TRACEFS

# Capability bits of /proc/<pid>/status CapEff (uapi/linux/capability.h).
CAPABILITY_BITS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
# What a person does about a missing capability. Never setcap on the interpreter: it is
# usually shared (/usr/bin/python3, a pyenv build), and every user of it would get BPF.
PRIVILEGE_FIX = ("run the notebook kernel as root (sudo), or use the kernel "
                 "'bpfnb (BPF capabilities)': `sudo make lab BPFNB_USER=$USER` installs it "
                 "(README: Running without root)")


def effective_capabilities(pid: int | str = "self") -> int:
    """The effective capability set of ``pid`` (this process by default), as a bit mask."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_capabilities(names=("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN")) -> list[str]:
    """Which of ``names`` this process does not hold (all of them if /proc is unreadable)."""
    try:
        caps = effective_capabilities()
    except OSError:
        return list(names)
    return [n for n in names if not caps >> CAPABILITY_BITS[n] & 1]


def privilege_hint() -> str:
    """What the kernel's EPERM/EACCES means for this process: the capabilities it lacks,
    or, when it holds them all, that capabilities are not the cause."""
    missing = missing_capabilities()
    if "CAP_BPF" in missing or "CAP_PERFMON" in missing:
        return (f"BPF needs CAP_BPF and CAP_PERFMON (and CAP_NET_ADMIN for XDP, tc and "
                f"cgroup_skb); this process lacks {', '.join(missing)}: {PRIVILEGE_FIX}.")
    if missing:
        return ("this process holds CAP_BPF and CAP_PERFMON but not CAP_NET_ADMIN, which "
                f"XDP, tc and cgroup_skb programs need: {PRIVILEGE_FIX}.")
    return ("this process holds CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, so missing "
            "capabilities are not the cause: a file the call needs is not readable by "
            f"uid {os.geteuid()}, the kernel is locked down, or the hook needs root.")


TRACEFS_FIX = ("Use the tp_btf/ or raw_tp/ hook of the same event (no tracefs needed), "
               "or let the bpfnb group read tracefs: `sudo python -m bpfnb kernelspec --user "
               "$USER` re-mounts it gid=bpfnb,mode=0750 and its kernel 'bpfnb (BPF "
               "capabilities)' runs in that group.")


def tracefs_denial(path: str = TRACEFS) -> str:
    """Why this process cannot read tracepoint ids under ``path`` ("mode 0700 owned by
    root:root", "missing"), or "" when it can."""
    if os.access(os.path.join(path, "events"), os.R_OK | os.X_OK):
        return ""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"mode {stat.S_IMODE(st.st_mode):04o} owned by {owner}:{group}"


def tracefs_hint(path: str = TRACEFS) -> str:
    """Why this process cannot attach tracepoint/ programs, and the fix ("" when it can)."""
    denial = tracefs_denial(path)
    if not denial:
        return ""
    if denial == "missing":
        return f"{path} is missing: as root run mount -t tracefs nodev {path}"
    return (f"tracepoint/ programs read their tracepoint's id from tracefs, and {path} is "
            f"{denial}, which uid {os.geteuid()} cannot enter (capabilities do not open "
            f"files). {TRACEFS_FIX}")


class BPFError(OSError):
    """A libbpf call failed. ``errno``, ``strerror`` and ``log`` (libbpf's own lines)."""

    def __init__(self, message: str, err: int = 0, log: str = "", hint: str = ""):
        self.log = log
        self.hint = hint
        self.message = message
        super().__init__(err, message)

    def __str__(self):
        parts = [self.message]
        if self.errno:
            parts[0] += f" [{_errno.errorcode.get(self.errno, self.errno)}: {os.strerror(self.errno)}]"
        if self.hint:
            parts.append(self.hint)
        tail = _tail(self.log, 12)
        if tail:
            parts.append("libbpf said:\n" + tail)
        return "\n".join(parts)


class OpenError(BPFError):
    """The object file could not be parsed."""


class LoadError(BPFError):
    """The object could not be loaded into the kernel. ``program``: the one that failed,
    when libbpf said which."""

    program: str | None = None


class VerifierError(LoadError):
    """The verifier rejected a program. ``log`` holds the full verifier log,
    ``libbpf_log`` all libbpf printed."""

    def __init__(self, program: str, err: int, verifier_log: str, libbpf_log: str = ""):
        self.program = program
        self.verifier_log = verifier_log
        self.libbpf_log = libbpf_log
        super().__init__(f"the verifier rejected program '{program}'", err, libbpf_log,
                         verifier_hint(verifier_log))
        self.log = verifier_log

    def __str__(self):
        lines = self.verifier_log.rstrip().splitlines()
        source = [ln for ln in lines if ln.startswith(";")]
        out = [f"The verifier rejected program '{self.program}'."]
        if source:
            out.append("Last source line it checked:  " + source[-1].lstrip("; "))
        if self.hint:
            out.append("Hint: " + self.hint)
        out.append("Verifier log (last lines; full text in .log):")
        out.extend("  " + ln for ln in lines[-15:])
        return "\n".join(out)


# The verifier's usual last words, and what a person does about them.
_VERIFIER_HINTS = [
    (r"invalid mem access '\w*_or_null'",
     "a pointer that may be NULL (from bpf_map_lookup_elem, bpf_ringbuf_reserve, ...) is "
     "used before a NULL check: add `if (!p) return 0;` first"),
    (r"invalid access to packet",
     "check bounds before reading packet bytes: "
     "`if ((void *)(hdr + 1) > data_end) return XDP_PASS;`"),
    (r"unbounded|min value is negative|max value is outside|"
     r"value is outside of the allowed memory range",
     "bound the index or offset with a check (`if (i >= N) return 0;`) before using it"),
    (r"invalid (indirect )?read from stack",
     "initialise the variable (`struct x v = {};`) before reading it or passing it on"),
    (r"back-edge|infinite loop detected|program is too large|too many states",
     "loops need a bound the verifier can see: a constant limit, or bpf_loop()"),
    (r"Unreleased reference|would lead to reference leak",
     "something acquired is not released on every path: a reserved ring buffer record "
     "needs bpf_ringbuf_submit() or bpf_ringbuf_discard() before each return (a kfunc "
     "reference, its release kfunc)"),
    (r"R0 !read_ok|At program exit the register R0",
     "the program must return a value"),
    (r"unknown func|program of this type cannot use helper|helper call is not allowed",
     "this helper is not available to this program type: pick another hook or helper"),
    (r"write into map forbidden|cannot write into",
     "this memory is read-only (.rodata, a const map or the context): write elsewhere"),
]


# libbpf poisons an instruction whose CO-RE relocation failed and, after the verifier
# stops there, names the relocation: "failed to resolve CO-RE relocation <byte_off>
# [336] struct cfs_rq.nr_running (0:1 @ offset 16)".
_CORE_RELO = re.compile(r"failed to resolve CO-RE relocation (?:<[^>]+> )?\[\d+\] ([^(\n]+?) \(")


def verifier_hint(verifier_log: str) -> str:
    """What usually fixes the rejection a verifier log ends with ("" when unknown)."""
    core = _CORE_RELO.search(verifier_log)
    if core and "invalid CO-RE relocation" in verifier_log:
        return (f"a CO-RE relocation failed: this kernel's BTF has no {core.group(1)} "
                f"Guard the read "
                f"with bpf_core_field_exists() / bpf_core_type_exists(), or read a "
                f"___flavour struct matching this kernel")
    tail = "\n".join(verifier_log.rstrip().splitlines()[-6:])
    return next((hint for pattern, hint in _VERIFIER_HINTS if re.search(pattern, tail)), "")


class AttachError(BPFError):
    """A program could not be attached to its hook."""


class PrivilegeError(BPFError, PermissionError):
    """The kernel refused for lack of privilege."""


class ObjectClosedError(RuntimeError):
    """The object this handle belongs to has been destroyed."""


def _tail(text: str, n: int) -> str:
    lines = [ln for ln in text.rstrip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


_PROG_LOG = re.compile(r"prog '([^']+)': -- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --",
                       re.S)


def verifier_logs(libbpf_log: str) -> list[tuple[str, str]]:
    """(program, verifier log) pairs that libbpf printed for failed loads."""
    return _PROG_LOG.findall(libbpf_log)


def last_errno(rc: int | None = None) -> int:
    if rc is not None and rc < 0:
        return -rc
    return ctypes.get_errno() or _errno.EINVAL


def make(cls, message: str, err: int, log: str = "", hint: str = "") -> BPFError:
    """Build the right exception for ``err``, adding the privilege hint where it applies."""
    if err in (_errno.EPERM, _errno.EACCES) and (
            os.geteuid() != 0 or missing_capabilities(("CAP_BPF", "CAP_PERFMON"))):
        return PrivilegeError(message, err, log, hint or privilege_hint())
    return cls(message, err, log, hint)
