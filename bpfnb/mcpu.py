"""Which -mcpu a verifier rejection is the fault of, and the build that loads instead.

clang's BPF -mcpu picks the instruction set: v1/v2 have only 64-bit ALU operations, v3
(and v4) add 32-bit ones (alu32: ``w`` registers) and 32-bit jumps. Either way clang
sometimes bounds-checks a *copy* of a narrow value and indexes with the original. The
verifier carries a check over only between registers a plain move linked, and any
operation on the copy breaks that link, so the index stays unbounded. Which code does
it depends on the -mcpu, and the other -mcpu's code for the same source loads:

Without alu32 (v1/v2), a 32-bit value (an ``int`` length, a helper's return) is widened
with a shift pair on the copy that is checked (an execsnoop-style argument append,
tests/progs/argpack.bpf.c)::

    14: (bf) r1 = r0
    15: (67) r1 <<= 32
    16: (c7) r1 s>>= 32
    18: (c5) if r1 s< 0x81 goto pc+4
    24: (67) r0 <<= 32                 <- the original, widened again, unchecked
    29: (85) call bpf_get_current_comm#16
    R1 unbounded memory access, make sure to bounds check any such access

With alu32 (v3/v4), a ``__u8``/``__u16`` is narrowed with ``&=`` on a 32-bit copy that
is checked (ksnoop's function stack, ``ips[stack_depth - 1]``)::

    54: (bc) w3 = w2
    55: (54) w3 &= 255
    56: (26) if w3 > 0xf goto pc+10
    57: (57) r2 &= 255                 <- the original, narrowed again, unchecked
    61: (79) r2 = *(u64 *)(r3 +8)
    R3 max value is outside of the allowed memory range

With alu32 the verifier can also lose what a 32-bit operation left in the upper half
(after ``w7 /= 200`` it no longer knows it is zero), so ``if w7 < 25`` bounds w7 and not
the 64-bit index (cpufreq's linear histogram: "math between map_value pointer and
register with unbounded min value is not allowed"); v2 divides and checks r7 itself.

Measured on Linux 6.18 with clang 14, 16 and 19 over 66 libbpf-tools, libbpf-bootstrap
and bpfnb sources (each at v1-v3, v4 with clang 19, and with their bool options on):
ksnoop and cpufreq load at v1/v2 and are rejected at v3/v4 with every clang, the ways
above; softirqs -d (clang 19) is rejected at v1/v2 the first way, and substr hits "BPF
program is too large" at v1/v2 with such shift pairs in its log; v3 loads both. Every
one of these 16 rejections matches a rule below; no other verdict differed (two
bpfnb test programs need v3 to compile at all: they use an atomic add's result).

``rule(verifier_log, mcpu) -> str | None`` says why a rejection of a build at ``mcpu``
is the -mcpu's (None when nothing in the log shows it). ``rebuild(cflags, error) ->
Rebuild | None`` gives the cflags to build again with when a rule matches, else None:
nothing is retried on a guess. ``of(cflags)`` is the -mcpu a build with these user
cflags uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from . import build

ALU32 = "v3"        # the first -mcpu with 32-bit ALU operations and jumps
NO_ALU32 = "v2"     # the last one without
_WITHOUT_ALU32 = {"v1", "v2", "generic"}
_WITH_ALU32 = {"v3", "v4"}

# The verifier's words for a register whose bounds do not prove the access safe.
_BOUNDS = re.compile(
    r"^(R\d+) (?:unbounded memory access|min value is negative|unbounded min value"
    r"|max value is outside of the allowed memory range"
    r"|min value is outside of the allowed memory range)", re.M)
_MATH = re.compile(r"^math between \w+ pointer and register with unbounded min value "
                   r"is not allowed", re.M)
_TOO_LARGE = re.compile(r"^BPF program is too large", re.M)
_INSN = re.compile(r"^(\d+): \(", re.M)
_NEAR = 3  # how many instructions later the next step of a pattern is looked for
# How much of the log's end is read: the check an access lost is near it, and a log that
# ran out of instructions can be megabytes long.
_WINDOW = 256 * 1024
# "24: (67) r0 <<= 32 ..." then (source lines between) "25: (77) r0 >>= 32 ..."
_WIDEN = re.compile(r"^(\d+): \(67\) (r\d+) <<= 32\b[^\n]*\n(?:;[^\n]*\n)*"
                    r"(\d+): \((?:77|c7)\) \2 (s?>>)= 32\b", re.M)
# a 32-bit bounds check against a constant: "14: (a6) if w7 < 0x19 goto pc+1 ..."
_JMP32 = re.compile(r"^(\d+): \(\w+\) if w(\d+) s?[<>]=? (?:0x)?[0-9a-f]+ [^\n]*", re.M)
_COPY32 = re.compile(r"^(\d+): \(bc\) (w\d+) = w(\d+)\b", re.M)


@dataclass(frozen=True)
class Rebuild:
    cflags: list      # the user's cflags with the -mcpu that loads
    mcpu: str         # the -mcpu of the rejected build
    target: str       # the -mcpu it is built with instead
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
    log = verifier_log.rstrip()[-_WINDOW:]
    tail_start = len(log) - len("\n".join(log.splitlines()[-4:]))
    bounds = [m for m in _BOUNDS.finditer(log) if m.start() >= tail_start]
    if mcpu in _WITHOUT_ALU32:
        return _widened(log, mcpu, bounds, _TOO_LARGE.search(log, tail_start))
    if mcpu not in _WITH_ALU32:
        return None
    math = _MATH.search(log, tail_start)
    if bounds:
        return _copied32(log, mcpu, bounds[-1]) or _half_checked(log, mcpu, bounds[-1])
    return _half_checked(log, mcpu, math) if math else None


def _lost(log: str, mcpu: str, error) -> str:
    insns = _INSN.findall(log, 0, error.start())
    at = f" at insn {insns[-1]}" if insns else ""
    reg = f" of {error.group(1)}" if error.groups() else ""
    return f"at -mcpu={mcpu} the verifier lost the bounds{reg}{at} ({error.group(0)})"


def _following(log: str, end: int) -> list[str]:
    """The next few instruction lines of the log after offset ``end``."""
    found, pos = [], log.find("\n", end)
    for _ in range(8 * _NEAR):  # source and state lines come in between
        if pos < 0 or len(found) == _NEAR:
            break
        nxt = log.find("\n", pos + 1)
        line = log[pos + 1:nxt if nxt >= 0 else len(log)]
        if _INSN.match(line):
            found.append(line)
        pos = nxt
    return found


def _widened(log, mcpu, bounds, too_large) -> str | None:
    widen = list(_WIDEN.finditer(log))
    if not widen or not (bounds or too_large):
        return None
    if not bounds:
        first, reg, last, shift = widen[-1].group(1, 2, 3, 4)
        return (f"at -mcpu={mcpu} the program was too large for the verifier: without "
                f"alu32, clang widens 32-bit values with shift pairs (e.g. insn "
                f"{first}-{last}: {reg} <<= 32; {reg} {shift}= 32), whose lost bounds keep "
                f"states from merging")
    for m in widen:  # the first pair whose register is bounds-checked right after
        first, reg, last, shift = m.group(1, 2, 3, 4)
        check = next((ln for ln in _following(log, m.end())
                      if re.match(rf"\d+: \(\w+\) if {reg} ", ln)), None)
        if check:
            return (f"{_lost(log, mcpu, bounds[-1])}: without alu32, clang widened a "
                    f"32-bit value on a copy (insn {first}-{last}: {reg} <<= 32; {reg} "
                    f"{shift}= 32), checked that copy at insn {check.split(':')[0]} and "
                    f"indexed with the original")
    return None  # no check on a widened copy: the program's own missing check


def _copied32(log, mcpu, error) -> str | None:
    for m in _COPY32.finditer(log, 0, error.start()):
        first, reg = m.group(1, 2)
        after = _following(log, m.end())
        op = next((ln for ln in after if re.match(rf"\d+: \(\w+\) {reg} \S+= ", ln)), None)
        if op is None:
            continue
        check = next((ln for ln in _following(log, log.index(op, m.end()))
                      if re.match(rf"\d+: \(\w+\) if {reg} ", ln)), None)
        if check is None:
            continue
        # ... and the original (the copy's source) is changed on its own after the check
        original = re.compile(rf"^\d+: \(\w+\) [rw]{m.group(3)} \S+= ", re.M)
        if original.search(log, log.index(check, m.end()), error.start()):
            what = op.split(";")[0].split(") ", 1)[1].strip()
            return (f"{_lost(log, mcpu, error)}: with alu32, clang checked a 32-bit copy "
                    f"(insn {first}: {m.group(0).split(') ', 1)[1]}; insn "
                    f"{op.split(':')[0]}: {what}; checked at insn {check.split(':')[0]}) "
                    f"and indexed with the original, which the verifier does not link to "
                    f"the copy once the copy is changed")
    return None


def _half_checked(log, mcpu, error) -> str | None:
    """A 32-bit check (jmp32) that left the register's upper half unknown: after some
    32-bit operations (division, modulo) the verifier no longer knows that the upper 32
    bits are zero, so ``if w6 < 25`` bounds w6 and not r6, which the index then uses."""
    for m in _JMP32.finditer(log, 0, error.start()):
        insn, reg = m.group(1, 2)
        state = re.search(rf"\bR{reg}=scalar\(([^)]*)\)", m.group(0))
        if not state or not re.search(r"(?:^|,)umax=0x[0-9a-f]{9,}", state.group(1)) \
                or "umax32=" not in state.group(1):
            continue
        lost = re.compile(rf"^(\d+): \(\w+\) (w{reg} \S+= [^;\n]*?) *; R{reg}=scalar\(\)",
                          re.M).findall(log, max(0, m.start() - _WINDOW // 16), m.start())
        if not lost:  # nothing shows where the upper half was lost
            continue
        how = f" after insn {lost[-1][0]} ({lost[-1][1]})"
        return (f"{_lost(log, mcpu, error)}: with alu32, clang bounds-checked only the low "
                f"32 bits (insn {insn}: if w{reg} ...), and the verifier did not know the "
                f"upper 32 bits of r{reg} were zero{how}, so the 64-bit index stayed "
                f"unbounded")
    return None


def rebuild(cflags: Sequence[str], error) -> Rebuild | None:
    """The build that loads when ``error`` (a VerifierError of a build with these user
    ``cflags``) matches :func:`rule`, else None."""
    mcpu = of(cflags)
    why = rule(getattr(error, "verifier_log", "") or "", mcpu)
    if why is None:
        return None
    target = ALU32 if mcpu in _WITHOUT_ALU32 else NO_ALU32
    how = ("alu32 code checks and uses the same 32-bit register" if target == ALU32
           else "64-bit code checks and indexes with the same register")
    note = f"rebuilt with -mcpu={target}: {why} ({how})"
    return Rebuild([*cflags, f"-mcpu={target}"], mcpu, target, note)


def also_rejected(first, second) -> str:
    """``first``'s hint, saying that the rebuild was rejected too (``second``: a
    VerifierError, or the CompileError of a source that needs the first -mcpu)."""
    if hasattr(second, "verifier_log"):
        last = next((ln for ln in reversed((second.verifier_log or "").splitlines())
                     if ln.strip() and not ln.startswith("processed ")), "")
        told = f"the verifier rejected it too ({last.strip()})"
    else:
        told = f"clang could not build it ({str(second).splitlines()[-1].strip()})"
    told = f"rebuilt with the other -mcpu, {told}"
    return f"{first.hint}; {told}" if first.hint else told
