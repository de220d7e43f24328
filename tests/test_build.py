"""bpfnb.build (the clang driver) and bpfnb.libbpf.cheader (vmlinux.h in process)."""

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from bpfnb import build, cache
from bpfnb.build import CompileError

pytestmark = pytest.mark.skipif(
    not (os.environ.get("BPFNB_CLANG") or shutil.which("clang")
         or any(shutil.which(f"clang-{v}") for v in range(11, 30))),
    reason="clang is not installed")

COUNTER = r'''struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024); __type(key, u32); __type(value, u64);} counts SEC(".maps");
u64 total = 0;
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx) { u32 pid = bpf_get_current_pid_tgid() >> 32; u64 one = 1, *v = bpf_map_lookup_elem(&counts, &pid); if (v) __sync_fetch_and_add(v, 1); else bpf_map_update_elem(&counts, &pid, &one, BPF_ANY); __sync_fetch_and_add(&total, 1); return 0; }
'''

LIBBPF_TOOLS_STYLE = r'''// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct event { int pid, ppid; char comm[16]; };

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} rb SEC(".maps");

const volatile int target_ppid = 0;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t pid, struct linux_binprm *bprm)
{
	struct event *e;
	int ppid = BPF_CORE_READ(p, real_parent, tgid);

	if (target_ppid && ppid != target_ppid)
		return 0;
	e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = pid;
	e->ppid = ppid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
'''


@pytest.fixture(scope="session", autouse=True)
def build_cache(tmp_path_factory):
    """One cache for the session (conftest usually sets it already), so vmlinux.h and
    the PCH are built once."""
    if "BPFNB_CACHE" not in os.environ:
        os.environ["BPFNB_CACHE"] = str(tmp_path_factory.mktemp("bpfnb-cache"))
    return Path(os.environ["BPFNB_CACHE"])


def elf_sections(path) -> dict:
    """{section name: bytes} of a 64-bit little-endian ELF file (BPF objects)."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
               for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[strtab_off:strtab_off + strtab_size]
    out = {}
    for name_off, sh_type, _, _, off, size, *_ in headers:
        name = strtab[name_off:strtab.index(b"\0", name_off)].decode()
        out[name] = b"" if sh_type == 8 else data[off:off + size]  # 8: NOBITS
    return out


def test_tracepoint_program_compiles():
    res = build.build(COUNTER)
    assert res.path.exists() and res.path.suffix == ".o"
    secs = elf_sections(res.path)
    assert "tracepoint/syscalls/sys_enter_openat" in secs
    assert ".maps" in secs and ".BTF" in secs and ".BTF.ext" in secs
    assert secs["license"] == b"GPL\0"  # added because the cell has none
    assert res.used_pch, "the prelude should come from the precompiled header"
    assert build.compile(COUNTER) == res.path


def test_btf_line_info_quotes_the_cells_own_lines():
    # the verifier log quotes these line texts; #line "<cell>" would have lost them
    path = build.compile(COUNTER + "// line info\n")
    btf = elf_sections(path)[".BTF"]
    assert b"u32 pid = bpf_get_current_pid_tgid() >> 32;" in btf
    assert b"cell.c" in btf


def test_libbpf_tools_style_source_compiles_unmodified():
    res = build.build(LIBBPF_TOOLS_STYLE)
    assert not res.used_pch
    secs = elf_sections(res.path)
    assert "tp_btf/sched_process_exec" in secs
    assert secs["license"] == b"Dual BSD/GPL\0"  # its own, nothing appended
    # no prelude: only the compat header (macros of newer libbpf headers) goes first
    included = [res.command[i + 1] for i, c in enumerate(res.command) if c == "-include"]
    assert included == [str(build.COMPAT_H)]


def test_source_file_with_local_header(tmp_path):
    (tmp_path / "exec.h").write_text("#define MAX_ENTRIES 64\n")
    src = tmp_path / "exec.bpf.c"
    src.write_text('#include "exec.h"\n' + LIBBPF_TOOLS_STYLE.replace(
        "256 * 1024", "MAX_ENTRIES * 4096"))
    first = build.build(src)
    assert not first.cached and first.path.exists()
    again = build.build(str(src))
    assert again.cached and again.path == first.path
    # editing the header the file includes must recompile, although the .c is unchanged
    (tmp_path / "exec.h").write_text("#define MAX_ENTRIES 128\n")
    edited = build.build(src)
    assert not edited.cached
    # an error in the file names the file itself
    bad = tmp_path / "bad.bpf.c"
    bad.write_text("int a;\nint b = ;\n")
    with pytest.raises(CompileError) as ei:
        build.compile(bad)
    assert f"{bad}:2:" in str(ei.value)


def test_syntax_error_points_at_the_cells_line(build_cache):
    src = "u64 a;\nu64 b;\nint c = ;\nu64 d;\n"
    with pytest.raises(CompileError) as ei:
        build.compile(src)
    e = ei.value
    msg = str(e)
    assert "<cell>:3:" in msg and "error" in msg
    assert "int c = ;" in msg and "^" in msg  # clang's source line and caret
    assert str(build_cache) not in msg and "cell.c" not in msg
    assert e.source == src and e.filename == "<cell>"
    assert "<cell>:3:" in e.diagnostics

    with pytest.raises(CompileError) as ei:
        build.compile(src, filename="<probe>")
    assert "<probe>:3:" in str(ei.value)


def test_cache_hit_runs_no_clang(monkeypatch):
    src = COUNTER + "// cache hit\n"
    path = build.compile(src)
    mtime = path.stat().st_mtime_ns

    def no_clang(*a, **k):
        raise AssertionError(f"clang ran on a cache hit: {a}")

    monkeypatch.setattr(build.subprocess, "run", no_clang)
    t0 = time.perf_counter()
    res = build.build(src)
    elapsed = time.perf_counter() - t0
    assert res.cached and res.path == path
    assert path.stat().st_mtime_ns == mtime
    assert elapsed < 0.05, f"cache hit took {elapsed:.3f} s"


def test_cflags_change_the_key():
    src = COUNTER + "#if FOO != 1\n#error FOO must be 1\n#endif\n"
    with pytest.raises(CompileError, match="FOO must be 1"):
        build.compile(src)
    a = build.compile(src, cflags=["-DFOO=1"])
    b = build.compile(src, cflags="-DFOO=1 -DBAR=2")
    assert a != b
    assert build.compile(COUNTER) != build.compile(COUNTER, cflags=["-DFOO=1"])


def test_warnings_are_kept_also_on_a_hit():
    src = COUNTER + "static int unused_fn(void) { int x; return x; }\n"
    res = build.build(src, cflags=["-Wall"])
    assert "warning" in res.warnings and "<cell>:" in res.warnings
    hit = build.build(src, cflags=["-Wall"])
    assert hit.cached and hit.warnings == res.warnings


def test_without_pch_and_with_a_broken_pch():
    res = build.build(COUNTER + "// no pch\n", pch=False)
    assert not res.used_pch and res.path.exists()
    # a PCH changed on disk is caught by its digest before clang sees it, and rebuilt
    pch = build.vmlinux_pch()
    assert pch is not None
    pch.write_bytes(b"not a precompiled header")
    with pytest.warns(cache.CacheWarning, match=r"prelude\.pch whose sha256"):
        res = build.build(COUNTER + "// broken pch\n")
    assert res.path.exists() and res.used_pch
    # a PCH bpfnb wrote but this clang cannot read (another clang, an interrupted
    # disk) must never fail a compile: clang parses the headers once, the PCH is rebuilt
    c, key = cache.current(), pch.parent.name
    c.drop("pch", key)
    staging = c.stage("pch")
    cache.write_file(staging, build.PCH_NAME, b"not a precompiled header")
    c.commit(staging, "pch", key)
    res = build.build(COUNTER + "// unusable pch\n")
    assert res.path.exists() and not res.used_pch
    assert build.build(COUNTER + "// pch rebuilt\n").used_pch


def test_uapi_style_source_gets_no_prelude():
    src = r'''#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }
'''
    assert not build.wants_prelude(src)
    assert "xdp" in elf_sections(build.compile(src))


def test_object_path_is_returned_as_is():
    obj = build.compile(COUNTER)
    assert build.compile(obj) == obj
    assert build.compile(str(obj)) == Path(str(obj))


def test_vmlinux_h():
    text = build.vmlinux_h().read_text()
    assert text.startswith("#ifndef __VMLINUX_H__\n")
    assert "struct task_struct {" in text
    assert "#pragma clang attribute push (__attribute__((preserve_access_index)), " \
           "apply_to = record)" in text
    assert text.rstrip().endswith("#endif /* __VMLINUX_H__ */")
    assert "()" not in text  # empty parameter lists are written (void)


@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool is not installed")
def test_dump_c_header_matches_bpftool():
    from bpfnb.libbpf.cheader import dump_c_header
    ours = dump_c_header()
    theirs = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                             "format", "c"], capture_output=True, text=True,
                            check=True).stdout
    # libbpf.so sizes 1-byte enums with mode(byte); older bpftool builds do not
    assert ours.replace(" __attribute__((mode(byte)))", "") == \
        theirs.replace(" __attribute__((mode(byte)))", "")


def test_find_clang_errors_clearly(monkeypatch):
    monkeypatch.setenv("BPFNB_CLANG", "/nonexistent/clang-99")
    with pytest.raises(build.ClangNotFound, match="BPFNB_CLANG"):
        build.find_clang()
    monkeypatch.delenv("BPFNB_CLANG")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(build.ClangNotFound, match="apt install clang"):
        build.find_clang()


def test_clash_with_a_kernel_type_names_the_fix():
    with pytest.raises(CompileError) as e:
        build.compile("struct stat { int x; };\n")
    assert "<cell>:1:8: error: redefinition of 'stat'" in str(e.value)
    assert "vmlinux.h already defines 'stat'" in str(e.value)
