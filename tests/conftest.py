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


@pytest.fixture
def no_leaks(need_root):
    """Fails the test if it leaves a BPF program or link of its own in the kernel."""
    from bpfnb.libbpf import kernel_ids
    import gc
    progs, links = kernel_ids("prog"), kernel_ids("link")
    yield
    gc.collect()
    left_p = kernel_ids("prog") - progs
    left_l = kernel_ids("link") - links
    assert not left_p and not left_l, f"left in the kernel: programs {left_p}, links {left_l}"
