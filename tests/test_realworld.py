"""Programs written for plain libbpf load through bpfnb.load unmodified."""

import os
from pathlib import Path

import bpfnb

PROGRAM = Path(__file__).parent.parent / "bpf" / "execsnoop_style.bpf.c"


def test_libbpf_tools_style_program_loads_unmodified(no_leaks):
    pid = os.getpid()
    with bpfnb.load(PROGRAM, rodata={"targ_tgid": pid}) as obj:
        # max_entries 0 sized by the loader; the stack map's value_size too
        assert obj.maps.wakeups.max_entries > 0
        assert obj.maps.stacks.value_size > 0
        # only one family of the tp_btf/raw_tp twins is loaded and attached
        assert obj.progs.sched_wakeup.links and not obj.progs.sched_wakeup_raw.links
        assert not obj.progs.sched_wakeup_raw.autoload
        fd = os.open("/etc/hostname", os.O_RDONLY)
        try:
            for i in range(5):
                os.lseek(fd, i, os.SEEK_SET)
        finally:
            os.close(fd)
        # the .kconfig extern was resolved by libbpf at load
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
        assert obj.bss.kernel_version >> 16 == major
        assert (obj.bss.kernel_version >> 8) & 0xFF == minor
        assert obj.rodata.verbose is False


def test_raw_tp_family_when_preferred(no_leaks):
    with bpfnb.load(PROGRAM, prefer="raw_tp") as obj:
        assert obj.progs.sched_wakeup_raw.links and not obj.progs.sched_wakeup.links
