"""Re-running a %%bpf cell of 1 tracepoint link and of 30, as the user waits for it
(run_cell through IPython: compile cache hit, load, attach, old object torn down),
against the old way measured in the same run: the old object destroyed first, each
link in turn waiting for its program to be detached and its perf event freed, then the
new one attached. Cells re-run unchanged (same hooks) and changed (30 other
tracepoints: the old perf events are the last users of theirs, whose freeing waits
again). Prints JSON lines."""

import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from bpfnb.libbpf import sysfs, teardown  # noqa: E402
from bpfnb.registry import registry  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
OLD_RUNS = int(os.environ.get("BENCH_OLD_RUNS", "1"))  # ~2.5 s each for 30 links
SYSCALLS = "/sys/kernel/tracing/events/syscalls"


def cell(links: int, prefix: str = "sys_enter_") -> str:
    sysfs.ensure_tracefs()
    events = sorted(e for e in os.listdir(SYSCALLS) if e.startswith(prefix))[:links]
    progs = "".join(f'SEC("tracepoint/syscalls/{e}")\nint p_{i}(void *ctx) '
                    f"{{ __sync_fetch_and_add(&hits, 1); return 0; }}\n"
                    for i, e in enumerate(events))
    return f"%%bpf tool -q\nu64 hits = 0;\n{progs}"


def rerun(ip, text: str, old_way: bool) -> tuple[float, float]:
    """Seconds of one re-run of ``text`` (a cell named tool is live), and seconds the
    background threads needed after it (the kernel's waits, freeing perf events)."""
    t0 = time.perf_counter()
    if old_way:  # without a held perf fd each link waits for its perf event, as before
        for prog in registry.get("tool").progs:
            for link in prog.links:
                fds, link.perf_fds = link.perf_fds, []
                for fd in fds:
                    os.close(fd)
        t0 = time.perf_counter()
        registry.stop("tool")  # the old order: destroy, then load and attach
    with capture_output():
        result = ip.run_cell(text)
    seconds = time.perf_counter() - t0
    assert result.success
    t1 = time.perf_counter()
    assert teardown.wait(30)  # each run starts with no close pending
    return seconds, time.perf_counter() - t1


def teardown_part(links: int, old_way: bool) -> float:
    """Milliseconds the old object's teardown adds to a re-run: the new one (same
    hooks) is attached, then the old one is detached (stopped) and destroyed."""
    import bpfnb
    source = cell(links).split("\n", 1)[1]
    old = bpfnb.load(source)
    new = bpfnb.load(source)
    if old_way:
        for prog in old.progs:
            for link in prog.links:
                fds, link.perf_fds = link.perf_fds, []
                for fd in fds:
                    os.close(fd)
    t0 = time.perf_counter()
    old.detach(wait=False)
    old.destroy()
    seconds = time.perf_counter() - t0
    new.destroy()
    assert teardown.wait(30)
    return seconds * 1000


def main():
    if os.geteuid() != 0:
        sys.exit("bench_rerun needs root (it loads tracepoint programs)")
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bpfnb")
    figures = {}
    cases = {"1_link": (cell(1), cell(1)), "30_link": (cell(30), cell(30)),
             "30_link_new_hooks": (cell(30), cell(30, "sys_exit_"))}
    for case, texts in cases.items():
        for text in texts:
            with capture_output():
                assert ip.run_cell(text).success  # compiled once, then cache hits
        for old_way in (False, True):
            runs = [rerun(ip, texts[i % 2], old_way)
                    for i in range(OLD_RUNS if old_way else RUNS)]
            figures[case, old_way] = [statistics.median(r) * 1000 for r in zip(*runs)]
        registry.stop_all()
        teardown.wait(30)
    for links in (1, 30):
        for old_way in (False, True):
            figures["teardown", links, old_way] = statistics.median(
                teardown_part(links, old_way) for _ in range(OLD_RUNS if old_way else RUNS))
    for links in (1, 30):
        print(json.dumps({"bench": "rerun", "metric": f"teardown_{links}_link_ms",
                          "value": round(figures["teardown", links, False], 2), "unit": "ms",
                          "baseline": round(figures["teardown", links, True], 1),
                          "note": "the old object's part of a re-run (new one attached)"}))
    print(json.dumps({"bench": "rerun", "metric": "teardown_ratio_30_to_1_link",
                      "value": round(figures["teardown", 30, False]
                                     / figures["teardown", 1, False], 2),
                      "unit": "x", "target": 2.0,
                      "baseline": round(figures["teardown", 30, True]
                                        / figures["teardown", 1, True], 2)}))
    for case in cases:
        print(json.dumps({"bench": "rerun", "metric": f"rerun_{case}_ms",
                          "value": round(figures[case, False][0], 1), "unit": "ms",
                          "baseline": round(figures[case, True][0], 1)}))
    for case in ("30_link", "30_link_new_hooks"):
        print(json.dumps({"bench": "rerun", "metric": f"ratio_{case}_to_1_link",
                          "value": round(figures[case, False][0] / figures["1_link", False][0],
                                         2),
                          "unit": "x", "target": 2.0,
                          "baseline": round(figures[case, True][0] / figures["1_link", True][0],
                                            2)}))
    print(json.dumps({"bench": "rerun", "metric": "background_close_30_link_new_hooks_ms",
                      "value": round(figures["30_link_new_hooks", False][1], 1), "unit": "ms",
                      "baseline": round(figures["30_link_new_hooks", True][1], 1),
                      "note": "after the re-run returned, background threads waiting for "
                              "the kernel (the old way waited before returning)"}))
    ip.run_line_magic("unload_ext", "bpfnb")


if __name__ == "__main__":
    main()
