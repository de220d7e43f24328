import os
import shutil

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "root: needs root (CAP_BPF/CAP_PERFMON) to load programs")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """One compile cache for the whole run, so vmlinux.h and its PCH are built once."""
    if "BPFNB_CACHE" not in os.environ:
        os.environ["BPFNB_CACHE"] = str(tmp_path_factory.mktemp("bpfnb-cache"))
    yield


@pytest.fixture
def need_root():
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root (or CAP_BPF + CAP_PERFMON)")
    if not shutil.which(os.environ.get("BPFNB_CLANG", "clang")) and not any(
            shutil.which(f"clang-{v}") for v in range(14, 21)):
        pytest.skip("clang is not installed")


def held_bpf_ids() -> set[tuple[str, int]]:
    """(kind, id) of every BPF program, map and link this process holds an fd of."""
    held = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("prog_id", "map_id", "link_id"):
                held.add((key[:-3], int(value)))
    return held


@pytest.fixture(scope="module")
def shell():
    """IPython's shell with the bpfnb extension loaded, `os` and `bpfnb` imported in it;
    one per test module, every object stopped and the extension unloaded after."""
    from IPython.core.interactiveshell import InteractiveShell
    from bpfnb.registry import registry
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bpfnb")
    ip.run_cell("import os, bpfnb")
    yield ip
    registry.stop_all()
    ip.run_line_magic("unload_ext", "bpfnb")


@pytest.fixture
def no_leaks(need_root):
    """Fails the test if it leaves a BPF program, map or link of its own in the kernel.

    It compares what this process holds fds of: whole-kernel counts would also see
    other processes loading programs meanwhile. Nothing is ever pinned, so an object
    not held by us is gone from the kernel.
    """
    import gc
    before = held_bpf_ids()
    yield
    gc.collect()
    left = held_bpf_ids() - before
    assert not left, f"left in the kernel, held by this process: {sorted(left)}"
