"""Real .BTF blobs for the BTF tests: three objects compiled the ways bpfnb meets them.

* tests/progs/btfzoo.bpf.c with plain ``clang -g -O2 -target bpf`` (a .o built elsewhere),
* bpf/execsnoop_style.bpf.c through bpfnb.build (vmlinux.h, CO-RE: kernel types in BTF),
* a cell with the bpfnb prelude and histogram helpers (what ``%%bpf`` compiles).
"""

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

HIST_CELL = r"""
struct who { u32 pid; char comm[16]; };
BPFNB_HIST(lat, 32);
BPFNB_HIST_KEYED(by_who, struct who, 64);

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    struct who w = { .pid = bpf_get_current_pid_tgid() >> 32 };
    bpf_get_current_comm(w.comm, sizeof(w.comm));
    bpfnb_hist_log2(&lat, ctx->args[1]);
    bpfnb_hist_log2_keyed(&by_who, w, ctx->args[1]);
    return 0;
}
"""


def compile_zoo(out_dir) -> Path:
    """tests/progs/btfzoo.bpf.c compiled by clang alone, as a user would outside bpfnb."""
    from bpfnb import build
    out = Path(out_dir) / "btfzoo.o"
    cmd = [build.find_clang(), "-g", "-O2", "-target", "bpf"]
    inc = build.multiarch_include()
    if inc:
        cmd.append(f"-I{inc}")
    cmd += ["-c", str(HERE / "progs" / "btfzoo.bpf.c"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"clang failed: {' '.join(cmd)}\n{r.stderr}")
    return out


def objects(out_dir) -> dict:
    """{name: path of the .o} of the three test objects."""
    from bpfnb import build
    return {
        "btfzoo": compile_zoo(out_dir),
        "execsnoop_style": Path(build.compile(ROOT / "bpf" / "execsnoop_style.bpf.c")),
        "hist_cell": Path(build.compile(HIST_CELL)),
    }


def btf_section(path) -> bytes:
    """The raw .BTF section of an ELF object."""
    from bpfnb.libbpf.btf.parse import _elf_section
    sec = _elf_section(Path(path).read_bytes(), ".BTF")
    if sec is None:
        raise RuntimeError(f"{os.fspath(path)} has no .BTF section")
    return sec
