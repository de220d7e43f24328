"""Exercise stubs (bpfnb.exercise): which cells are stubs, the one line a stub shows in
IPython (a failed cell, no traceback), and pairing stubs with their Solution blocks."""

import pytest

from bpfnb import exercise
from bpfnb.exercise import NotAnswered, SolutionError

SOLUTION_C = ("<details><summary>Solution</summary>\n\n```c\n%%bpf failed --set x=1\n"
              "u64 errors = 0;\n```\n\n</details>")
SOLUTION_PY = ("<details><summary>Solution</summary>\n\n```python\nanswer = 42\n"
               "print(answer)\n```\n\n</details>")


def md(text):
    return {"cell_type": "markdown", "source": text}


def code(text):
    return {"cell_type": "code", "source": text}


@pytest.mark.parametrize("source, label", [
    ("# your answer here", None),
    ("# Exercise 2: your answer here\n# (hint: a set)\n", "Exercise 2"),
    ("\n  # Exercise 1 - Your answer here\n\n", "Exercise 1"),
])
def test_python_stubs(source, label):
    stub = exercise.python_stub(source)
    assert isinstance(stub, NotAnswered) and stub.label == label
    assert str(stub) == (f"{label or 'This exercise'} is not answered yet: write your code "
                         f"in this cell (the Solution above shows one), then run it again.")
    assert stub._render_traceback_() == [str(stub)]


@pytest.mark.parametrize("source", [
    "", "# just a note", "x = 1  # your answer here", "# your answer here\nx = 1",
    "print('# your answer here')", "%%bpf x\n// your answer here",
])
def test_python_cells_that_are_not_stubs(source):
    assert exercise.python_stub(source) is None


def test_bpf_stubs():
    stub = exercise.bpf_stub("// Exercise 1: your answer here\n// (hint)\n\n")
    assert stub.label == "Exercise 1" and "write your program" in str(stub)
    assert exercise.bpf_stub("/* your answer here */").label is None
    assert exercise.bpf_stub("/*\n * your answer here\n */") is None  # the mark starts a line
    assert exercise.bpf_stub("// your answer here\nu64 total = 0;") is None
    assert exercise.bpf_stub("// a comment\n") is None
    assert exercise.is_stub("%%bpf failed --set x=1\n// Exercise 1: your answer here")
    assert not exercise.is_stub("%%bpf failed\nu64 errors = 0;")


def test_solutions_pair_each_stub_with_the_block_above():
    cells = [md("# Lab"), code("import os"), md(SOLUTION_C),
             code("%%bpf failed --set x=1\n// Exercise 1: your answer here"),
             code("# Check\nprint('correct')"), md(SOLUTION_PY),
             code("# Exercise 2: your answer here")]
    assert exercise.solutions(cells) == {3: "%%bpf failed --set x=1\nu64 errors = 0;",
                                         6: "answer = 42\nprint(answer)"}
    assert exercise.fill(cells) == 2
    assert cells[6]["source"] == "answer = 42\nprint(answer)"
    with pytest.raises(SolutionError, match="cell 2: a Solution with no exercise stub"):
        exercise.solutions(cells)  # filled: the Solutions have no stubs any more


@pytest.mark.parametrize("cells, message", [
    ([code("# your answer here")], "cell 0: an exercise stub with no Solution"),
    ([md("Write it."), code("# your answer here")], "cell 1: an exercise stub with no"),
    ([md("<details><summary>Solution</summary>no code</details>"),
      code("# your answer here")], "cell 1: an exercise stub with no Solution"),
    ([md(SOLUTION_PY), code("print(1)")], "cell 0: a Solution with no exercise stub"),
    ([md(SOLUTION_C), code("%%bpf other\n// your answer here")],
     "the stub starts '%%bpf other' but its solution '%%bpf failed --set x=1'"),
])
def test_solutions_fail_loudly(cells, message):
    with pytest.raises(SolutionError, match=message.replace("(", r"\(")):
        exercise.solutions(cells)


def test_a_stub_fails_its_cell_with_one_line(shell, capsys):
    capsys.readouterr()
    for cell, what in [("# Exercise 3: your answer here\n# (hint)", "code"),
                       ("%%bpf answer --set x=1\n// Exercise 3: your answer here", "program")]:
        result = shell.run_cell(cell)
        assert not result.success and isinstance(result.error_in_exec, NotAnswered)
        out = capsys.readouterr()
        text = out.out + out.err
        assert text.strip() == (f"Exercise 3 is not answered yet: write your {what} in this "
                                f"cell (the Solution above shows one), then run it again.")
    assert "answer" not in shell.user_ns  # the %%bpf stub loaded nothing
    assert shell.run_cell("# a note, not a stub").success
