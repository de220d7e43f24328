"""Malformed BPF objects: every mutated variant is refused with a bpfnb error (OpenError,
LoadError) or opens and loads; none crashes the process, none leaks.

The fuzzing itself is bench/fuzz_objects.py (mutators, a child process per run so a
crash fails the test with its seed, variant and mutators named).  Inputs that once
crashed libbpf 1.1.2 are kept in tests/data/fuzz and replayed every run.
"""

import errno
import os
import struct
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))

import fuzz_objects  # noqa: E402

from bpfnb.libbpf import BPFError, LoadError, Object, OpenError, elfcheck  # noqa: E402

SEED = 13
VARIANTS = 2400
KEPT = HERE / "data" / "fuzz"


@pytest.fixture(scope="module")
def objects():
    return fuzz_objects.compile_objects()


def test_mutated_objects_never_crash(need_root, tmp_path):
    stats = fuzz_objects.run(SEED, VARIANTS, keep=str(tmp_path / "crashers"), timeout=150)
    assert stats["variants"] == VARIANTS, stats
    assert not stats["crashes"], "\n".join(
        f"seed {SEED} variant {c['variant']} ({c['object']}: {'; '.join(c['mutators'])}) "
        f"died with {c['signal']}; input kept in {c.get('kept')}" for c in stats["crashes"])
    results = stats["results"]
    foreign = {k: v for k, v in results.items()
               if k not in ("loaded", "opened") and not k.startswith("bpfnb:")}
    assert not foreign, (foreign, "".join(stats.get("stderr", []))[-4000:])
    # the mutators reach every side: refused at open, refused at load, loaded
    assert results.get("bpfnb:OpenError", 0) > VARIANTS // 3, results
    assert results.get("loaded", 0) > VARIANTS // 20, results
    assert results.get("bpfnb:LoadError", 0) + results.get("bpfnb:VerifierError", 0) > 10


def test_kept_crashers_are_refused():
    """Each input crashed libbpf 1.1.2 once (tests/data/fuzz/README names where)."""
    kept = sorted(KEPT.glob("*.elf"))
    assert len(kept) >= 9
    for path, result in fuzz_objects.replay(kept).items():
        assert result == "bpfnb:OpenError", (path, result)


def test_the_valid_objects_open_and_load(need_root, objects):
    for name, data in objects.items():
        assert fuzz_objects.attempt(data) == "loaded", name


def test_every_test_program_passes_validation():
    """No false alarm on what clang makes: every program of tests/progs and bpf/."""
    from bpfnb import build
    sources = sorted((HERE / "progs").glob("*.bpf.c")) + sorted(
        (HERE.parent / "bpf").glob("*.bpf.c"))
    for src in sources:
        elf = elfcheck.check(Path(build.compile(src)).read_bytes())
        assert elf.btf is not None and elf.symbols, src.name


# ----------------------------------------------------------------------------- messages
# One targeted fault per libbpf 1.1.2 crash site, and the message that names it.

def _btf_words(data: bytes):
    """(file offset of type #1, its record offsets, the parsed layout)."""
    elf = elfcheck.check(data)
    sec = elf.section(".BTF")
    hdr_len, type_off = struct.unpack_from("<II", data, sec.offset + 4)
    t0 = sec.offset + hdr_len + type_off
    return elf, [t0 + 4 * o for o in elf.btf._offs[1:]]


def _refused(data: bytes) -> str:
    with pytest.raises(OpenError) as e:
        Object(data)
    assert e.value.errno == errno.EINVAL
    return str(e.value)


def test_map_member_beyond_the_types(objects):
    data = bytearray(objects["fuzz_maps"])
    elf, recs = _btf_words(data)
    btf = elf.btf
    sid = btf.resolve(btf.type(btf.datasec_vars(".maps")[0][1]).id)
    member = recs[sid - 1] + 12                   # first member: name, type, offset
    struct.pack_into("<I", data, member + 4, len(btf) + 5)
    msg = _refused(bytes(data))
    assert f"member 'type' refers to type #{len(btf) + 5}, beyond the last type" in msg
    assert "malformed BPF object: .BTF: BTF type #" in msg


def test_core_relocation_faults_are_named(objects):
    base = objects["bootstrap"]
    elf = elfcheck.check(base)
    relo = next(off for kind, off, _ in elf.ext_records if kind == "CO-RE relocation")
    n = len(elf.btf)
    data = bytearray(base)
    struct.pack_into("<I", data, relo + 4, n)
    assert f"refers to BTF type #{n}, beyond the {n} types" in _refused(bytes(data))
    data = bytearray(base)
    struct.pack_into("<I", data, relo + 8, 1 << 30)
    assert "access string: string offset 1073741824 beyond the BTF string table" in \
        _refused(bytes(data))
    data = bytearray(base)
    struct.pack_into("<I", data, relo, 1 << 20)
    assert "instruction offset 1048576 is not an instruction" in _refused(bytes(data))


def test_extern_name_outside_the_string_table(objects):
    data = bytearray(objects["fuzz_maps"])
    elf = elfcheck.check(bytes(data))
    sym = next(s for s in elf.symbols if s.name == "LINUX_KERNEL_VERSION")
    struct.pack_into("<I", data, sym.entry, 0x7FFFFFFF)
    msg = _refused(bytes(data))
    assert f"symbol #{sym.index}: name offset 2147483647 beyond its string table" in msg


def test_extern_without_btf(objects):
    data = bytearray(objects["fuzz_maps"])
    elf = elfcheck.check(bytes(data))
    sym = next(s for s in elf.symbols if s.name == "CONFIG_PREEMPT")
    other = next(s for s in elf.symbols if s.name == "LICENSE")
    data[sym.entry:sym.entry + 4] = data[other.entry:other.entry + 4]   # named LICENSE
    assert "extern 'LICENSE'" in _refused(bytes(data))


def test_relocation_entry_size_zero(objects):
    data = bytearray(objects["fuzz_net"])
    elf = elfcheck.check(bytes(data))
    rel = next(s for s in elf.sections if s.type == elfcheck.SHT_REL)
    struct.pack_into("<Q", data, rel.header + 56, 0)
    assert f"relocation section {rel.name!r}: entry size 0" in _refused(bytes(data))


def test_missing_file_is_an_open_error(tmp_path):
    with pytest.raises(OpenError) as e:
        Object(tmp_path / "nothing.o")
    assert e.value.errno == errno.ENOENT


# ----------------------------------------------------------------------------- leaks

def _fds():
    return len(os.listdir("/proc/self/fd"))


def test_failures_leak_nothing(need_root, monkeypatch):
    """Failed opens and loads hold no fd and no libbpf object afterwards; the object
    libbpf opened but bpfnb refused (a name that is not UTF-8, with the validation
    turned off to reach that path) is freed too."""
    inputs = fuzz_objects.failing_inputs()
    for kind, data in inputs.items():
        with pytest.raises((OpenError, LoadError) if kind != "open" else OpenError):
            Object(data).load()
    monkeypatch.setattr(elfcheck, "check", lambda data: None)
    with pytest.raises(UnicodeDecodeError):      # what libbpf lets through
        Object(inputs["after open"])
    rss0, fds0 = fuzz_objects._rss(), _fds()
    for k in range(600):
        try:
            Object(inputs["after open"] if k % 2 else inputs["load"]).load()
        except (BPFError, UnicodeDecodeError):
            pass
    assert _fds() == fds0
    # the unfixed close path lost ~13 kB per refused object: 4 MB here
    assert fuzz_objects._rss() - rss0 < 2 << 20
