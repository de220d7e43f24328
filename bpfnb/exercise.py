"""Lab exercises: which cells are unanswered stubs, the line that says so, and the
solutions a lab keeps in collapsed ``<details>`` blocks (to fill the stubs in).

A stub is a code cell holding only comments, one of which says "your answer here"::

    %%bpf failed --set target_pid={os.getpid()}
    // Exercise 1: your answer here

    # Exercise 2: your answer here
    # (hint: report.to_df() is the same report as a DataFrame)

Running one raises NotAnswered, which a notebook shows as its one line (no traceback) and
counts as a failed cell, so Run All stops at the first unanswered exercise. The magics
(bpfnb.magics) run the check; this module knows no IPython. Cells here are plain dicts
(or nbformat nodes) with ``cell_type`` and ``source``.
"""

from __future__ import annotations

import re

MARK = "your answer here"
# "# Exercise 2: your answer here", "// your answer here", "/* Exercise 1 - your answer here */"
_MARK_LINE = re.compile(r"^(?:#|//|/\*)\s*(?:(Exercise\s+\d+)\s*[:,.—–-]?\s*)?"
                        + MARK, re.IGNORECASE)
SUMMARY = "<summary>Solution</summary>"
_FENCE = re.compile(r"^```[\w+-]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


class NotAnswered(Exception):
    """A stub cell ran: its message alone is shown (IPython's ``_render_traceback_``)."""

    def __init__(self, label: str | None, what: str):
        self.label = label
        super().__init__(f"{label or 'This exercise'} is not answered yet: write your "
                         f"{what} in this cell (the Solution above shows one), then run "
                         f"it again.")

    def _render_traceback_(self):
        return [str(self)]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _stub_label(lines: list[str], comment: tuple[str, ...]) -> tuple[bool, str | None]:
    """(every line is a comment and one is the mark, the "Exercise N" it names)."""
    if not lines or not all(line.startswith(comment) for line in lines):
        return False, None
    for line in lines:
        m = _MARK_LINE.match(line)
        if m:
            return True, m.group(1)
    return False, None


def bpf_stub(body: str) -> NotAnswered | None:
    """The NotAnswered for a ``%%bpf`` cell body (below its magic line) that is a stub:
    only comments and blank lines, one of them the mark. None for real C."""
    stub, label = _stub_label(_lines(body), ("//", "/*", "*"))
    return NotAnswered(label, "program") if stub else None


def python_stub(source: str) -> NotAnswered | None:
    """The NotAnswered for a Python cell that is only ``#`` comments, one the mark."""
    stub, label = _stub_label(_lines(source), ("#",))
    return NotAnswered(label, "code") if stub else None


def is_stub(source: str) -> bool:
    """Whether a code cell's whole text (magic line included) is an exercise stub."""
    first, _, body = source.partition("\n")
    if first.startswith("%%bpf"):
        return bpf_stub(body) is not None
    return python_stub(source) is not None


def solution(markdown: str) -> str | None:
    """The code of a ``<details><summary>Solution</summary>`` cell's fenced block."""
    if SUMMARY not in markdown:
        return None
    m = _FENCE.search(markdown)
    return m.group(1).rstrip("\n") if m else None


class SolutionError(ValueError):
    """A lab's stubs and solutions do not pair up."""


def solutions(cells) -> dict[int, str]:
    """{index of each stub cell: the solution code of the Solution cell right above it}.
    SolutionError when a stub has no Solution above it, a Solution has no stub below it,
    its block holds no code, or the solution's ``%%bpf`` line is not the stub's."""
    found = {}
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and SUMMARY in cell["source"]:
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            if nxt is None or nxt["cell_type"] != "code" or not is_stub(nxt["source"]):
                raise SolutionError(f"cell {i}: a Solution with no exercise stub right "
                                    f"below it")
        if cell["cell_type"] != "code" or not is_stub(cell["source"]):
            continue
        above = cells[i - 1] if i else None
        code = solution(above["source"]) if above and above["cell_type"] == "markdown" \
            else None
        if code is None:
            raise SolutionError(f"cell {i}: an exercise stub with no Solution (a "
                                f"<details> block with a ``` code block) right above it")
        stub_line, code_line = cell["source"].split("\n")[0], code.split("\n")[0]
        if stub_line.startswith("%%") and stub_line != code_line:
            raise SolutionError(f"cell {i}: the stub starts {stub_line!r} but its solution "
                                f"{code_line!r}")
        found[i] = code
    return found


def fill(cells) -> int:
    """Replace every stub's source by its solution, in place; the number filled."""
    answers = solutions(cells)
    for i, code in answers.items():
        cells[i]["source"] = code
    return len(answers)
