"""Which clang, which target: finding the BPF C compiler and the host's arch and
multiarch include directory (memoised per process; bpfnb.build drives the compile)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

_ARCH = {"x86_64": "x86", "amd64": "x86", "i386": "x86", "i686": "x86",
         "aarch64": "arm64", "arm64": "arm64", "s390x": "s390", "ppc64le": "powerpc",
         "ppc64": "powerpc", "riscv64": "riscv", "loongarch64": "loongarch",
         "sparc64": "sparc", "mips": "mips", "mips64": "mips"}

_MULTIARCH = {"x86_64": "x86_64-linux-gnu", "amd64": "x86_64-linux-gnu",
              "aarch64": "aarch64-linux-gnu", "arm64": "aarch64-linux-gnu",
              "armv7l": "arm-linux-gnueabihf", "s390x": "s390x-linux-gnu",
              "ppc64le": "powerpc64le-linux-gnu", "riscv64": "riscv64-linux-gnu",
              "i686": "i386-linux-gnu", "loongarch64": "loongarch64-linux-gnu"}

_memo: dict = {}  # per process: clang path and version, the multiarch directory


class ClangNotFound(RuntimeError):
    pass


def find_clang() -> str:
    """$BPFNB_CLANG, else the newest ``clang-N`` on PATH, else ``clang``."""
    env = os.environ.get("BPFNB_CLANG")
    path_var = os.environ.get("PATH", os.defpath)
    memo_key = ("clang", env, path_var)
    if memo_key in _memo:
        return _memo[memo_key]
    if env:
        found = shutil.which(env)
        if not found:
            raise ClangNotFound(f"BPFNB_CLANG={env!r} is not an executable clang")
    else:
        best, found = -1, None
        for d in path_var.split(os.pathsep):
            try:
                names = os.listdir(d or ".")
            except OSError:
                continue
            for name in names:
                m = re.fullmatch(r"clang-(\d+)", name)
                if m and int(m.group(1)) > best:
                    p = os.path.join(d or ".", name)
                    if os.access(p, os.X_OK) and os.path.isfile(p):
                        best, found = int(m.group(1)), p
        found = found or shutil.which("clang")
        if not found:
            raise ClangNotFound(
                "clang not found: BPF C needs clang with the BPF target. Install it "
                "(Debian/Ubuntu: apt install clang; conda: conda install -c conda-forge "
                "clang) or set BPFNB_CLANG=/path/to/clang.")
    _memo[memo_key] = found
    return found


def clang_version(clang: str | None = None) -> str:
    """First line of ``clang --version`` (memoised per binary)."""
    clang = clang or find_clang()
    key = ("version", clang)
    if key not in _memo:
        try:
            out = subprocess.run([clang, "--version"], capture_output=True, text=True,
                                 timeout=60)
        except OSError as e:
            raise ClangNotFound(f"cannot run {clang}: {e}") from e
        first = (out.stdout or out.stderr).strip().splitlines()
        _memo[key] = f"{os.path.realpath(clang)} {first[0] if first else '?'}"
    return _memo[key]


def target_arch() -> str:
    m = platform.machine().lower()
    return _ARCH.get(m, "arm" if m.startswith("arm") else m)


def multiarch_include() -> str | None:
    """/usr/include/<multiarch> (asm/types.h lives there on Debian), if it exists."""
    if "multiarch" not in _memo:
        triple = None
        gcc = shutil.which("gcc")
        if gcc:
            try:
                triple = subprocess.run([gcc, "-print-multiarch"], capture_output=True,
                                        text=True, timeout=30).stdout.strip() or None
            except (OSError, subprocess.SubprocessError):
                triple = None
        triple = triple or _MULTIARCH.get(platform.machine().lower())
        d = f"/usr/include/{triple}" if triple else None
        _memo["multiarch"] = d if d and os.path.isdir(d) else None
    return _memo["multiarch"]
