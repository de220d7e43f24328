"""What this machine allows: privileges, kernel, file systems, toolchain, and which
program types load *and* attach, found by really trying a tiny program of each type.

``run() -> Report``; ``str(report)`` for a terminal, ``report.to_df()`` or the HTML
repr for a notebook. ``python -m bpfnb doctor`` and ``%bpf doctor`` show it.
"""

from __future__ import annotations

import functools
import html
import os
import platform
import sys
import time
from dataclasses import dataclass, field

from . import build
from .libbpf import VERSION, Object, PrivilegeError, sysfs
from .libbpf.errors import (CAPABILITY_BITS, PRIVILEGE_FIX, TRACEFS_FIX,
                            effective_capabilities, missing_capabilities, tracefs_denial)

CAPABILITIES = CAPABILITY_BITS
_CAP_WHY = {
    "CAP_BPF": "every BPF program and map needs it",
    "CAP_PERFMON": "tracing programs (tracepoint, raw_tp, tp_btf, uprobe, perf_event, iter) "
                   "need it",
    "CAP_NET_ADMIN": "XDP, tc and cgroup_skb programs need it",
}
# The capabilities each program type needs (Linux >= 5.8); the rest trace.
_NEEDS = {"xdp": ("CAP_BPF", "CAP_NET_ADMIN"), "tc": ("CAP_BPF", "CAP_NET_ADMIN"),
          "cgroup_skb": ("CAP_BPF", "CAP_NET_ADMIN")}
_TRACING_NEEDS = ("CAP_BPF", "CAP_PERFMON")
_PRIVILEGE_FIX = PRIVILEGE_FIX  # hooks.trampoline_refusal tells privilege failures by it
MIN_KERNEL = (5, 8)  # CAP_BPF, ring buffers, task iterators
LOOPBACK = "lo"
UPROBE_TARGET = ("libc.so.6", "getpid")

# One tiny program per type. Each is its own object, so a type whose kernel types are
# missing from this kernel's BTF fails alone.
PROBES = {
    "tracepoint": 'SEC("tracepoint/syscalls/sys_enter_getpid")\n'
                  "int probe(void *ctx) { return 0; }\n",
    "raw_tp": 'SEC("raw_tp/sys_enter")\nint probe(void *ctx) { return 0; }\n',
    "tp_btf": 'SEC("tp_btf/sys_enter")\n'
              "int BPF_PROG(probe, struct pt_regs *regs, long id) { return 0; }\n",
    "fentry": 'SEC("fentry/vfs_read")\nint BPF_PROG(probe) { return 0; }\n',
    "kprobe": 'SEC("kprobe/vfs_read")\nint probe(void *ctx) { return 0; }\n',
    "uprobe": 'SEC("uprobe")\nint probe(void *ctx) { return 0; }\n',
    "perf_event": 'SEC("perf_event")\nint probe(void *ctx) { return 0; }\n',
    "xdp": 'SEC("xdp")\nint probe(struct xdp_md *ctx) { return XDP_PASS; }\n',
    "tc": 'SEC("tc")\nint probe(struct __sk_buff *skb) { return 0; /* TC_ACT_OK */ }\n',
    "cgroup_skb": 'SEC("cgroup_skb/ingress")\n'
                  "int probe(struct __sk_buff *skb) { return 1; /* allow */ }\n",
    "iter": 'SEC("iter/task")\nint probe(struct bpf_iter__task *ctx)\n{\n'
            "    struct task_struct *task = ctx->task;\n"
            '    if (task)\n        BPF_SEQ_PRINTF(ctx->meta->seq, "%d\\n", task->pid);\n'
            "    return 0;\n}\n",
}

PROGRAM_FIX = {
    "tracepoint": "tracepoints need tracefs (mount -t tracefs nodev /sys/kernel/tracing) and, "
                  "for syscalls, CONFIG_FTRACE_SYSCALLS=y; raw_tp/ and tp_btf/ hooks "
                  "work without tracefs",
    "raw_tp": "raw tracepoints need Linux >= 4.17 with CONFIG_BPF_EVENTS=y",
    "tp_btf": "tp_btf/ needs kernel BTF (CONFIG_DEBUG_INFO_BTF=y) and Linux >= 5.5: "
              "use raw_tp/ hooks instead",
    "fentry": "this kernel refuses fentry/fexit (they need BPF trampolines, "
              "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, and no lockdown): use tp_btf/ or "
              "tracepoint/ hooks instead",
    "kprobe": "kprobes are not in this kernel (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS): "
              "use tracepoint/ or tp_btf/ hooks instead",
    "uprobe": "uprobes need CONFIG_UPROBE_EVENTS=y (and tracefs on older kernels)",
    "perf_event": "sampling needs perf events (CONFIG_PERF_EVENTS) and CAP_PERFMON, or "
                  "sysctl kernel.perf_event_paranoid <= 1",
    "xdp": "XDP needs CAP_NET_ADMIN and CONFIG_XDP_SOCKETS/generic XDP; check that lo has "
           "no XDP program already (ip link show lo)",
    "tc": "tc needs CAP_NET_ADMIN and the clsact qdisc (CONFIG_NET_SCH_INGRESS, "
          "CONFIG_NET_CLS_BPF)",
    "cgroup_skb": "needs CONFIG_CGROUP_BPF=y and cgroup v2 mounted "
                  "(mount -t cgroup2 none /sys/fs/cgroup)",
    "iter": "BPF iterators need Linux >= 5.8 (task iterator) with kernel BTF",
}

PROGRAM_TYPES = tuple(PROBES)


@dataclass
class Check:
    group: str          # privileges, system, toolchain, program types
    item: str
    ok: bool | None     # None: information, or optional
    detail: str
    fix: str = ""


@dataclass
class Report:
    checks: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def program_types(self) -> dict:
        """{program type: loads and attaches here}"""
        return {c.item: bool(c.ok) for c in self.checks if c.group == "program types"}

    @property
    def can_load(self) -> bool:
        return any(self.program_types.values())

    def verdict(self) -> str:
        types = self.program_types
        good = [t for t, ok in types.items() if ok]
        if not good:
            return "No program type loads here: see the fixes above."
        return (f"{len(good)} of {len(types)} program types load and attach here: "
                f"{', '.join(good)}.")

    def __str__(self):
        out, group = [f"bpfnb doctor ({self.seconds:.2f} s)"], None
        width = max(len(c.item) for c in self.checks)
        for c in self.checks:
            if c.group != group:
                group = c.group
                out.append(group)
            out.append(f"  {_mark(c.ok):4}  {c.item:{width}}  {c.detail}")
            if c.fix:
                out.append(f"  {'':4}  {'':{width}}  fix: {c.fix}")
        out.append(self.verdict())
        return "\n".join(out)

    __repr__ = __str__

    def to_df(self):
        import pandas as pd
        return pd.DataFrame([c.__dict__ for c in self.checks],
                            columns=["group", "item", "ok", "detail", "fix"])

    def _repr_html_(self):
        colors = {True: "green", False: "red", None: "gray"}
        rows = "".join(
            f"<tr><td style='text-align:left'>{html.escape(c.group)}</td>"
            f"<td style='text-align:left'>{html.escape(c.item)}</td>"
            f"<td style='text-align:left;color:{colors[c.ok]}'><b>{_mark(c.ok)}</b></td>"
            f"<td style='text-align:left'>{html.escape(c.detail)}</td>"
            f"<td style='text-align:left'>{html.escape(c.fix)}</td></tr>" for c in self.checks)
        head = "".join(f"<th style='text-align:left'>{h}</th>"
                       for h in ("", "", "", "detail", "fix"))
        return (f"<b>bpfnb doctor</b> ({self.seconds:.2f} s)<table><thead><tr>{head}</tr>"
                f"</thead><tbody>{rows}</tbody></table><p>{html.escape(self.verdict())}</p>")


def _mark(ok: bool | None) -> str:
    return {True: "ok", False: "FAIL", None: "--"}[ok]


def run() -> Report:
    """Check everything, trying each program type for real (about a second warm)."""
    t0 = time.perf_counter()
    checks = _privileges() + _system() + _toolchain()
    clang_ok = all(c.ok for c in checks if c.item in ("clang", "vmlinux.h"))
    for kind in PROGRAM_TYPES:
        checks.append(_probe(kind) if clang_ok else
                      Check("program types", kind, False, "not tried: no BPF C compiler",
                            "install clang (see toolchain above)"))
    return Report(checks, time.perf_counter() - t0)


# --- privileges, system, toolchain -------------------------------------------------

def _privileges() -> list[Check]:
    try:
        caps = effective_capabilities()
    except OSError as e:
        return [Check("privileges", "capabilities", False, f"cannot read /proc/self/status: {e}",
                      "mount /proc")]
    checks = []
    shared, python = _interpreter()
    fix = _PRIVILEGE_FIX
    if not shared:
        fix += (f"; or, as {python} is yours alone: sudo setcap "
                f"cap_bpf,cap_perfmon,cap_net_admin+ep {python}")
    first = None
    for name in ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"):
        if caps >> CAPABILITIES[name] & 1:
            checks.append(Check("privileges", name, True, "effective"))
        else:
            checks.append(Check("privileges", name, False, f"missing: {_CAP_WHY[name]}",
                                f"as for {first}" if first else fix))
            first = first or name
    admin = bool(caps >> CAPABILITIES["CAP_SYS_ADMIN"] & 1)
    checks.append(Check("privileges", "CAP_SYS_ADMIN", True if admin else None,
                        "effective" if admin else "missing (CAP_BPF and CAP_PERFMON replace "
                        "it on Linux >= 5.8; uprobes may still need it: see uprobe below)"))
    whose = ("shared: never setcap it, every user of it would get BPF" if shared
             else "private to this user")
    checks.append(Check("privileges", "python", None, f"{python} ({whose})"))
    checks += _sysctls(caps)
    return checks


def _interpreter() -> tuple[bool, str]:
    """(shared, real path) of this Python: shared unless it is this non-root user's own
    file that nobody else may execute."""
    python = os.path.realpath(sys.executable)
    try:
        st = os.stat(python)
    except OSError:
        return True, python
    private = st.st_uid == os.geteuid() != 0 and not st.st_mode & 0o011
    return not private, python


def _sysctl(name: str) -> int | None:
    try:
        with open(f"/proc/sys/kernel/{name}") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _sysctls(caps: int) -> list[Check]:
    """kernel.unprivileged_bpf_disabled and kernel.perf_event_paranoid: what they mean for
    this process (they only matter without CAP_BPF / CAP_PERFMON)."""
    out = []
    bpf = caps >> CAPABILITIES["CAP_BPF"] & 1
    value = _sysctl("unprivileged_bpf_disabled")
    if value is None:
        out.append(Check("privileges", "unprivileged_bpf_disabled", None, "not readable"))
    elif bpf:
        out.append(Check("privileges", "unprivileged_bpf_disabled", None,
                         f"{value} (does not apply: CAP_BPF is held)"))
    else:
        meaning = ("0: without CAP_BPF only socket filters load" if value == 0 else
                   f"{value}: without CAP_BPF no bpf() call is allowed"
                   + (" until reboot" if value == 1 else ""))
        out.append(Check("privileges", "unprivileged_bpf_disabled", None,
                         meaning + "; tracing needs CAP_BPF whatever its value"))
    perfmon = caps >> CAPABILITIES["CAP_PERFMON"] & 1
    value = _sysctl("perf_event_paranoid")
    if value is None:
        out.append(Check("privileges", "perf_event_paranoid", None, "not readable"))
    elif perfmon:
        out.append(Check("privileges", "perf_event_paranoid", None,
                         f"{value} (does not apply: CAP_PERFMON is held)"))
    else:
        out.append(Check("privileges", "perf_event_paranoid", None,
                         f"{value}: without CAP_PERFMON perf events "
                         + ("of other processes and CPUs are refused" if value >= 1 else
                            "are allowed, but BPF programs still need CAP_PERFMON")))
    return out


def kernel_version() -> tuple[int, ...]:
    release = platform.release()
    parts = []
    for piece in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _system() -> list[Check]:
    release = platform.release()
    new_enough = kernel_version()[:2] >= MIN_KERNEL
    checks = [Check("system", "kernel", new_enough, f"Linux {release}",
                    "" if new_enough else "bpfnb wants Linux >= 5.8 (CAP_BPF, ring buffers, "
                                          "iterators); older kernels may load a subset")]
    btf = build.BTF_VMLINUX.exists()
    checks.append(Check("system", "BTF", btf, str(build.BTF_VMLINUX) if btf else "missing",
                        "" if btf else "CO-RE and vmlinux.h need a kernel built with "
                                       "CONFIG_DEBUG_INFO_BTF=y"))
    checks.append(_tracefs())
    ok, note = sysfs.ensure_bpffs()
    if ok and not os.access(sysfs.BPFFS, os.W_OK):
        checks.append(Check("system", "bpffs", None, f"{note}; not writable by uid "
                            f"{os.geteuid()}: pinning (only done when asked) would fail"))
    else:
        checks.append(Check("system", "bpffs", ok, note, "" if ok else note))
    return checks


def _tracefs() -> Check:
    """One verdict: mounted, and readable by this process (tracepoint ids live there)."""
    ok, note = sysfs.ensure_tracefs()
    if not ok:
        return Check("system", "tracefs", False, note, note)
    denial = tracefs_denial()
    if denial:
        return Check("system", "tracefs", False,
                     f"{sysfs.TRACEFS} is {denial}: uid {os.geteuid()} cannot read tracepoint "
                     f"ids (tracepoint/ fails; tp_btf/ and raw_tp/ work)", TRACEFS_FIX)
    return Check("system", "tracefs", True, f"{note}, readable by uid {os.geteuid()}")


def libbpf_file() -> str:
    """The libbpf shared object this process really loaded (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "libbpf.so" in os.path.basename(path):
                    return path
    except OSError:
        pass
    from .libbpf import LIBRARY_PATH
    return LIBRARY_PATH


def _toolchain() -> list[Check]:
    checks = []
    try:
        checks.append(Check("toolchain", "clang", True, build.clang_version()))
    except build.ClangNotFound as e:
        checks.append(Check("toolchain", "clang", False, "not found", str(e)))
    checks.append(Check("toolchain", "libbpf", True,
                        f"{VERSION[0]}.{VERSION[1]} {libbpf_file()}"))
    try:
        checks.append(Check("toolchain", "vmlinux.h", True, str(build.vmlinux_h())))
    except OSError as e:
        checks.append(Check("toolchain", "vmlinux.h", False, str(e),
                            "needs kernel BTF at /sys/kernel/btf/vmlinux"))
    return checks


# --- program types -----------------------------------------------------------------


def _attach(kind: str, prog) -> str:
    """Attach ``prog`` as a real user would; return what it attached to."""
    if kind == "uprobe":
        prog.attach_uprobe(*UPROBE_TARGET)
    elif kind == "perf_event":
        prog.attach_perf_event(freq=1, cpus=[0])
    elif kind == "xdp":
        prog.attach_xdp(LOOPBACK)
    elif kind == "tc":
        prog.attach_tc(LOOPBACK)  # removes the clsact qdisc again on detach
    elif kind == "cgroup_skb":
        path = sysfs.cgroup2_mount()
        if path is None:
            raise FileNotFoundError("cgroup v2 is not mounted")
        prog.attach_cgroup(path)
    elif kind == "iter":
        tasks = prog.read().count("\n")
        return f"read {tasks} tasks"
    else:
        prog.attach()
    return prog.hook


@functools.lru_cache(maxsize=None)
def program_type(kind: str) -> Check:
    """The check of one program type (one of ``PROGRAM_TYPES``), tried once per process.

    What bpfnb.probes() says of a probe's kind. Without the capabilities the type needs
    nothing is tried: the check names the missing ones.
    """
    if kind not in PROBES:
        raise ValueError(f"unknown program type {kind!r}: one of {', '.join(PROGRAM_TYPES)}")
    try:
        return _probe(kind)
    except build.ClangNotFound as e:
        return Check("program types", kind, False, "not tried: no BPF C compiler", str(e))


def _probe(kind: str) -> Check:
    missing = missing_capabilities(_NEEDS.get(kind, _TRACING_NEEDS))
    if missing:
        return Check("program types", kind, False, f"not tried: {', '.join(missing)} missing",
                     f"{kind} needs {' and '.join(_NEEDS.get(kind, _TRACING_NEEDS))}: "
                     f"see privileges above")
    try:
        path = build.compile(PROBES[kind], filename=f"<doctor-{kind}>")
    except build.CompileError as e:
        first = next((ln for ln in e.diagnostics.splitlines() if "error" in ln), str(e))
        return Check("program types", kind, False, f"does not compile here: {first}",
                     PROGRAM_FIX[kind])
    obj = None
    try:
        obj = Object(path, name=kind)
        obj.load()
        where = _attach(kind, obj.progs.probe)
        return Check("program types", kind, True, f"loads and attaches ({where})")
    except OSError as e:  # BPFError, and a missing cgroup v2 mount
        detail = str(e).splitlines()[0]
        # a refusal despite the capabilities: its hint says why (tracefs, lockdown)
        fix = e.hint if isinstance(e, PrivilegeError) and e.hint else PROGRAM_FIX[kind]
        return Check("program types", kind, False, detail, fix)
    finally:
        if obj is not None:
            obj.destroy()


def main() -> int:
    """``python -m bpfnb doctor``: the report as text; exit status 1 if nothing loads."""
    report = run()
    print(report)
    return 0 if report.can_load else 1
