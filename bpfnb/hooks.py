"""What this kernel can attach: each program's hook checked before load, with the reason
it cannot be used here.

``unavailable(section) -> str | None`` says why a ``SEC("...")`` cannot run on this
machine, from facts read before any load: the kernel's BTF (functions for fentry/lsm,
``btf_trace_*`` typedefs for tp_btf/raw_tp), tracefs events, /proc/kallsyms, the
kprobe PMU, the uprobe target binary, and for fentry/fexit/lsm the doctor's probe (a
tiny program really loaded once per process). ``load_failure`` and ``attach_failure``
tell a hook reason from a bug in the program once libbpf or the kernel has spoken.
``turn_off_unavailable(obj, strict)`` applies the first to an opened object.
"""

from __future__ import annotations

import errno
import glob
import os
import re
from pathlib import Path

from .libbpf import AttachError, BPFError, LoadError, PrivilegeError, VerifierError, sysfs

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
KALLSYMS = "/proc/kallsyms"
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
LSM_LIST = "/sys/kernel/security/lsm"

# Section kinds (what comes before the first "/"), with or without a target after it.
TRAMPOLINE = {"fentry", "fexit", "fmod_ret", "fentry.s", "fexit.s", "fmod_ret.s"}
LSM = {"lsm", "lsm.s", "lsm_cgroup"}
KPROBE = {"kprobe", "kretprobe"}
KSYSCALL = {"ksyscall", "kretsyscall"}
KPROBE_MULTI = {"kprobe.multi", "kretprobe.multi"}
TRACEPOINT = {"tracepoint", "tp"}
RAW_TP = {"tp_btf", "raw_tp", "raw_tracepoint", "raw_tp.w", "raw_tracepoint.w"}
UPROBE = {"uprobe", "uretprobe", "uprobe.s", "uretprobe.s", "usdt"}

# The syscall wrapper prefix libbpf puts before a ksyscall/ name, by architecture.
_SYSCALL_PREFIX = {"x86_64": "__x64_", "aarch64": "__arm64_", "s390x": "__s390x_",
                   "riscv64": "__riscv_", "ppc64le": "", "loongarch64": ""}

_memo: dict = {}


class UnavailableError(LoadError, AttachError):
    """Programs of an object cannot run on this kernel: their hooks are missing (so it
    is an AttachError too, raised before load). ``skipped``: {program: reason}."""

    def __init__(self, message: str, skipped: dict, hint: str = ""):
        self.skipped = dict(skipped)
        super().__init__(message, errno.EOPNOTSUPP, "", hint)

    def __str__(self):
        return f"{self.message}\n{self.hint}" if self.hint else self.message


# --- facts --------------------------------------------------------------------------

def _kernel_btf():
    if "btf" not in _memo:
        from .libbpf.btf import BTF
        try:
            btf = BTF.from_file(VMLINUX_BTF)
        except (OSError, ValueError):
            btf = None
        funcs = set(btf._names_of_kind(["func"])) if btf else None
        traces = ({n for n in btf._names_of_kind(["typedef"]) if n.startswith("btf_trace_")}
                  if btf else None)
        _memo["btf"] = (funcs, traces)
    return _memo["btf"]


def kernel_functions() -> set | None:
    """Names of the functions in the kernel's BTF (None without kernel BTF)."""
    return _kernel_btf()[0]


def kallsyms() -> set | None:
    """Text symbols of /proc/kallsyms, modules included (None when unreadable)."""
    if "kallsyms" not in _memo:
        names = set()
        try:
            with open(KALLSYMS) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        names.add(parts[2])
        except OSError:
            names = None
        _memo["kallsyms"] = names or None
    return _memo["kallsyms"]


def _function_exists(name: str) -> bool | None:
    """True/False when known, None when neither BTF nor kallsyms can tell."""
    funcs, syms = kernel_functions(), kallsyms()
    if funcs is None and syms is None:
        return None
    return name in (funcs or ()) or name in (syms or ())


def _raw_tracepoint_exists(name: str) -> bool | None:
    traces = _kernel_btf()[1]
    if traces is not None and f"btf_trace_{name}" in traces:
        return True
    # module tracepoints are in module BTF: tracefs lists their events
    if glob.glob(f"{sysfs.TRACEFS}/events/*/{glob.escape(name)}"):
        return True
    return False if traces is not None else None


def kprobes_available() -> bool:
    """Whether this kernel can create kprobes (the PMU, or tracefs kprobe_events)."""
    return os.path.isdir(KPROBE_PMU) or os.path.exists(f"{sysfs.TRACEFS}/kprobe_events")


def trampoline_refusal() -> str | None:
    """Why fentry/fexit/lsm programs fail here (the doctor's probe), or None."""
    if "fentry" not in _memo:
        from . import doctor
        check = doctor._probe("fentry")
        # only a refusal by the kernel counts: not a missing privilege or compiler
        refused = (not check.ok and check.fix != doctor._PRIVILEGE_FIX
                   and check.detail.startswith("cannot load"))
        code = re.search(r"\[(E[A-Z0-9]+):", check.detail)
        _memo["fentry"] = (code.group(1) if code else check.detail) if refused else None
    return _memo["fentry"]


def _bpf_lsm_active() -> bool | None:
    try:
        return "bpf" in Path(LSM_LIST).read_text().strip().split(",")
    except OSError:
        return None


# --- one section --------------------------------------------------------------------

def _kind(section: str) -> str:
    return section.split("/", 1)[0]


def _target(section: str) -> str:
    return section.split("/", 1)[1] if "/" in section else ""


def unavailable(section: str) -> str | None:
    """Why a program of ``SEC(section)`` cannot run on this machine, or None when it can
    (or when nothing checkable says otherwise; the load and attach will tell)."""
    kind, target = _kind(section), _target(section)
    if kind in TRACEPOINT:
        category, _, name = target.partition("/")
        ok, note = sysfs.ensure_tracefs()
        if not ok:
            return note
        events = f"{sysfs.TRACEFS}/events"
        if not os.access(events, os.R_OK | os.X_OK):
            return None  # tracefs is root's (mode 0700): the attach will say so
        if name and not os.path.isdir(f"{events}/{category}/{name}"):
            return (f"no tracepoint {category}:{name} in this kernel "
                    f"(not in {sysfs.TRACEFS}/events/{category}/)")
    elif kind in RAW_TP:
        if target and _raw_tracepoint_exists(target) is False:
            return (f"no raw tracepoint {target!r} in this kernel "
                    f"(no btf_trace_{target} in its BTF, no tracefs event)")
    elif kind in TRAMPOLINE | LSM:
        func = f"bpf_lsm_{target}" if kind in LSM else target.split(":")[-1]
        if target and _function_exists(func) is False:
            if kind in LSM:
                return f"no LSM hook {target!r} in this kernel (no {func} in its BTF)"
            return f"no kernel function {func!r} in this kernel's BTF"
        if kind in LSM and _bpf_lsm_active() is False:
            return f"the BPF LSM is not active ({LSM_LIST} does not list \"bpf\")"
        refusal = trampoline_refusal()
        if refusal:
            return (f"this kernel refuses fentry/fexit/lsm programs (a test fentry "
                    f"program failed to load: {refusal}): use a tp_btf/ or tracepoint/ hook")
    elif kind in KPROBE | KSYSCALL | KPROBE_MULTI:
        if kind in KPROBE and target:
            func = target.split("+")[0]
            if _function_exists(func) is False:
                return f"no kernel function {func!r} in this kernel (not in {KALLSYMS})"
        if kind in KSYSCALL and target:
            prefix = _SYSCALL_PREFIX.get(os.uname().machine, "")
            names = (f"{prefix}sys_{target}", f"sys_{target}")
            if all(_function_exists(n) is False for n in names):
                return f"no system call {target!r} in this kernel (no {names[0]} in {KALLSYMS})"
        if not kprobes_available():
            return ("kprobes are not in this kernel (no kprobe PMU, no tracefs "
                    "kprobe_events: CONFIG_KPROBES/CONFIG_KPROBE_EVENTS): use a "
                    "tracepoint/ or tp_btf/ hook")
    elif kind in UPROBE and ":" in target:
        binary = target.split(":", 1)[0]
        if "/" in binary and not os.path.exists(binary):
            what = "USDT" if kind == "usdt" else "uprobe"
            return f"no file {binary} ({what} target binary)"
    return None


# --- an object ----------------------------------------------------------------------

def _autoload_hint(names) -> str:
    pairs = ", ".join(f"{n!r}: False" for n in names)
    return f"turn them off to load the rest: bpfnb.load(..., autoload={{{pairs}}})"


def turn_off_unavailable(obj, strict: bool = False) -> dict:
    """Turn off (autoload) the programs of an opened ``obj`` whose hooks this kernel lacks;
    record why in ``obj.skipped``. With ``strict`` raise one error naming all of them
    instead. Also raises when nothing would be left to run."""
    found = {p.name: reason for p in obj.progs if p.autoload
             and (reason := unavailable(p.section)) is not None}
    if strict and found:
        raise UnavailableError(
            f"{len(found)} program(s) of {obj.name!r} cannot run on this kernel:\n"
            + _listing(obj, found), found, _autoload_hint(found))
    for name in found:
        obj.progs[name].autoload = False
    obj.skipped.update(found)
    check_something_left(obj)
    return found


def check_something_left(obj):
    """Raise when every program was turned off for a hook reason."""
    if obj.skipped and not any(p.autoload and p.name not in obj.skipped for p in obj.progs):
        raise UnavailableError(
            f"nothing of {obj.name!r} can run on this kernel; every program was "
            f"turned off:\n" + _listing(obj, obj.skipped), obj.skipped,
            "use hooks this kernel has (`%bpf doctor` lists the program types that "
            "work here; tracepoint/ and tp_btf/ usually do)")


def _listing(obj, reasons: dict) -> str:
    return "\n".join(f"  {name} (SEC(\"{obj.progs[name].section}\")): {why}"
                     for name, why in reasons.items())


# --- failures the kernel reported ---------------------------------------------------

_NO_BTF_ID = re.compile(r"prog '([^']+)': failed to find kernel BTF type ID of '([^']+)'")
# What attaching to a hook that is not there returns (EINVAL is left to raise: it is
# usually the program's own mistake, e.g. a program type that does not fit the hook).
_MISSING_AT_ATTACH = {errno.ENOENT, errno.ESRCH, errno.EOPNOTSUPP, 524, errno.ENODEV,
                      errno.EPERM}
_REFUSED_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, 524}  # 524: the kernel's ENOTSUPP


def load_failure(obj, error: BPFError) -> tuple[str, str] | None:
    """(program, reason) when ``error`` from ``obj.load()`` is a hook this kernel lacks
    (so loading again without that program can work), else None: a verifier rejection,
    a missing privilege or anything else is the program's own problem."""
    if isinstance(error, (VerifierError, PrivilegeError)) or not isinstance(error, LoadError):
        return None
    name = getattr(error, "program", None)
    if name is None or name not in obj.progs:
        return None
    section = obj.progs[name].section
    missing = _NO_BTF_ID.search(error.log or "")
    if missing and missing.group(1) == name:
        what = "raw tracepoint" if _kind(section) in RAW_TP else "kernel function"
        return name, f"no {what} {missing.group(2)!r} in this kernel's BTF (libbpf: ESRCH)"
    if _kind(section) in TRAMPOLINE | LSM and error.errno in _REFUSED_ERRNOS:
        return name, (f"this kernel refused the program ({_code(error.errno)}): "
                      f"fentry/fexit/lsm need BPF trampolines; use a tp_btf/ or "
                      f"tracepoint/ hook")
    return None


def attach_failure(prog, error: BPFError) -> str | None:
    """Why ``prog`` could not attach to its hook, when that is the hook's fault (missing
    here), else None."""
    if isinstance(error, PrivilegeError):
        return None
    if error.errno not in _MISSING_AT_ATTACH:
        return None
    return f"attach failed ({_code(error.errno)}): {error.hint or error.message}"


def _code(err: int) -> str:
    return errno.errorcode.get(err, "ENOTSUPP" if err == 524 else str(err))
