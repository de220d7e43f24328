"""Which -mcpu a verifier rejection is the fault of, and the build that loads instead.

clang's BPF -mcpu picks the instruction set: v1/v2 have only 64-bit ALU operations, v3
adds 32-bit ones (alu32: ``w`` registers) and 32-bit jumps. Without alu32, clang widens
a 32-bit value (an ``int``/``u32`` length, index or helper return) with a shift pair,
``rX <<= 32; rX >>= 32`` (``s>>=`` for signed), often on a copy of the register it bounds
checks. The verifier links a copy to its original only through plain moves, so the
check bounds the copy and the original, used for the access, stays unbounded:

    14: (bf) r1 = r0
    15: (67) r1 <<= 32
    16: (c7) r1 s>>= 32
    18: (c5) if r1 s< 0x81 goto pc+4   ; R1=...smax=128
    24: (67) r0 <<= 32
    25: (77) r0 >>= 32                 ; R0=...umax=0xffffffff
    26: (0f) r7 += r0
    29: (85) call bpf_get_current_comm#16
    R1 unbounded memory access, make sure to bounds check any such access

The same source built with -mcpu=v3 checks and uses the 32-bit subregister, whose bounds
the verifier tracks, and loads. Measured on Linux 6.18 with clang 14, 16 and 19 over
libbpf-tools and libbpf-bootstrap sources (softirqs with -d at clang 19, substr, an
execsnoop-style argument append): every v1/v2 rejection that v3 accepted ended this way
(a bounds error, or "BPF program is too large" from states the lost bounds kept
apart), with such a shift pair in the log; no program loaded at v2 and failed at v3.

``rule(verifier_log, mcpu) -> str | None`` says why a rejection of a build at ``mcpu``
is the build's, in words for the person reading the summary. ``rebuild(cflags, error)
-> Rebuild | None`` gives the cflags to build again with when the rule matches, and
``None`` otherwise (nothing is retried on a guess). ``of(cflags)`` is the -mcpu a build
with these user cflags uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from . import build

ALU32 = "v3"  # the first -mcpu with 32-bit ALU operations (and jmp32)
_WITHOUT_ALU32 = {"v1", "v2", "generic"}

# The verifier's words for a register whose bounds do not prove the access safe.
_BOUNDS = re.compile(
    r"^(R\d+) (?:unbounded memory access|min value is negative|unbounded min value"
    r"|max value is outside of the allowed memory range"
    r"|min value is outside of the allowed memory range)", re.M)
_TOO_LARGE = re.compile(r"^BPF program is too large", re.M)
# "24: (67) r0 <<= 32 ..." then (source lines between) "25: (77) r0 >>= 32 ..."
_WIDEN = re.compile(r"^(\d+): \(67\) (r\d+) <<= 32\b[^\n]*\n(?:;[^\n]*\n)*"
                    r"(\d+): \((?:77|c7)\) \2 (s?>>)= 32\b", re.M)
_INSN = re.compile(r"^(\d+): \(", re.M)
_NEXT_INSNS = 3  # how close after a shift pair a bounds check on its register is looked for


@dataclass(frozen=True)
class Rebuild:
    cflags: list      # the user's cflags with the -mcpu that loads
    mcpu: str         # the -mcpu of the rejected build
    note: str         # what happened, for obj.notes and the summary


def of(cflags: Sequence[str] = ()) -> str:
    """The -mcpu a bpfnb build with these user cflags uses (the last one given wins)."""
    value = ""
    for flag in [*build.default_cflags(), *cflags]:
        if flag.startswith("-mcpu="):
            value = flag.split("=", 1)[1]
    return value


def rule(verifier_log: str, mcpu: str) -> str | None:
    """Why the rejection in ``verifier_log`` of a build at ``mcpu`` is the -mcpu's fault
    (None when it is not, or when nothing in the log shows it)."""
    if mcpu not in _WITHOUT_ALU32:
        return None
    log = verifier_log.rstrip()
    tail_start = len(log) - len("\n".join(log.splitlines()[-4:]))
    bounds = [m for m in _BOUNDS.finditer(log) if m.start() >= tail_start]
    too_large = _TOO_LARGE.search(log, tail_start)
    widen = list(_WIDEN.finditer(log))
    if not widen or not (bounds or too_large):
        return None
    if not bounds:
        first, reg, last, shift = widen[-1].group(1, 2, 3, 4)
        return (f"at -mcpu={mcpu} the program was too large for the verifier: without "
                f"alu32, clang widens 32-bit values with shift pairs ({len(widen)} in the "
                f"log, e.g. insn {first}-{last}: {reg} <<= 32; {reg} {shift}= 32), whose "
                f"lost bounds keep states from merging")
    error = bounds[-1]
    insns = _INSN.findall(log, 0, error.start())
    at = f" at insn {insns[-1]}" if insns else ""
    return (f"at -mcpu={mcpu} the verifier lost the bounds of {error.group(1)}{at} "
            f"({error.group(0)}): without alu32, clang widened a 32-bit value with a "
            f"shift pair {_checked_pair(log, widen)}, and the verifier does not carry "
            f"that check over to the register the program then used")


def _checked_pair(log: str, widen: list) -> str:
    """The first shift pair whose register is bounds-checked right after, in words (else
    the last pair): that check is the one the rejected access did not get."""
    for m in widen:
        first, reg, last, shift = m.group(1, 2, 3, 4)
        following = log[m.end():].split("\n")[1:]
        insns = [ln for ln in following if _INSN.match(ln)][:_NEXT_INSNS]
        check = next((ln for ln in insns if re.match(rf"\d+: \(\w+\) if {reg} ", ln)), None)
        if check:
            return (f"(insn {first}-{last}: {reg} <<= 32; {reg} {shift}= 32) and checked "
                    f"that copy at insn {check.split(':', 1)[0]}")
    first, reg, last, shift = widen[-1].group(1, 2, 3, 4)
    return f"(insn {first}-{last}: {reg} <<= 32; {reg} {shift}= 32)"


def rebuild(cflags: Sequence[str], error) -> Rebuild | None:
    """The build that loads when ``error`` (a VerifierError of a build with these user
    ``cflags``) matches :func:`rule`, else None."""
    mcpu = of(cflags)
    why = rule(getattr(error, "verifier_log", "") or "", mcpu)
    if why is None:
        return None
    note = (f"rebuilt with -mcpu={ALU32}: {why} (alu32 code keeps the checked 32-bit "
            f"value in a w register, whose bounds the verifier tracks)")
    return Rebuild([*cflags, f"-mcpu={ALU32}"], mcpu, note)


def also_rejected(first, second) -> str:
    """``first``'s hint, saying that the -mcpu=v3 rebuild was rejected too (``second``)."""
    last = next((ln for ln in reversed((second.verifier_log or "").splitlines())
                 if ln.strip() and not ln.startswith("processed ")), "")
    told = f"rebuilt with -mcpu={ALU32}, the verifier rejected it too ({last.strip()})"
    return f"{first.hint}; {told}" if first.hint else told
