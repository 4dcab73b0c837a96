"""Shared progress reporting: plain lines off a terminal, heartbeat, quiet, verbose."""

import io
import re
import time

import pytest

from oblivio import _progress
from oblivio._progress import NORMAL, QUIET, VERBOSE, Task, task, verbosity_set

LINE = re.compile(r"\[oblivio\] cells: (\d+)/(\d+) \(\d+%\) elapsed \d+:\d\d( ETA (\d+:\d\d|\?))?")


def test_lines_carry_done_total_elapsed_eta():
    out = io.StringIO()
    with Task("cells", total=4, mode="lines", interval=0.05, stream=out) as t:
        t.update(1, note="a")
        time.sleep(0.06)
        t.update(2, note="b")
    lines = out.getvalue().splitlines()
    assert LINE.match(lines[0]) and "ETA ?" in lines[0]  # the start line
    assert any("2/4 (50%)" in line and "ETA 0:0" in line and "| b" in line for line in lines)
    assert lines[-1].endswith("(finished)")


def test_heartbeat_writes_while_a_step_runs():
    out = io.StringIO()
    with Task("cells", total=2, mode="lines", interval=0.1, stream=out) as t:
        t.update(1)
        time.sleep(0.45)  # no update: the heartbeat keeps lines coming
    beats = [line for line in out.getvalue().splitlines() if "1/2" in line]
    assert len(beats) >= 3


def test_nested_tasks_stay_quiet_unless_long():
    out = io.StringIO()
    outer = Task("cells", total=1, mode="lines", interval=5, stream=out)
    with outer, Task("training", total=3, mode="lines", interval=5, stream=out) as inner:
        inner.advance()
    assert "training" not in out.getvalue()


def test_string_messages_count_steps():
    out = io.StringIO()
    with Task("canary", total=3, mode="lines", interval=100, stream=out, every_update=True) as t:
        t("training")
        t("unlearning with retrain")
        t("unlearning with first-order")
    assert "canary: 1/3" in out.getvalue() and "| unlearning with retrain" in out.getvalue()
    assert "canary: 3/3 (100%)" in out.getvalue().splitlines()[-1]


def test_verbosity_chooses_the_mode():
    stream = io.StringIO()  # not a terminal
    assert task("x", stream=stream).mode == "off"  # library use: silent
    assert task("x", stream=stream, force=True).mode == "lines"
    with verbosity_set(QUIET):
        assert task("x", stream=stream, force=True).mode == "off"
    with verbosity_set(NORMAL):
        assert task("x", stream=stream).mode == "lines"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    with verbosity_set(NORMAL):
        assert task("x", stream=Terminal()).mode == "bar"
    with verbosity_set(VERBOSE):
        made = task("x", stream=Terminal())
        assert made.mode == "lines" and made.every_update
    assert _progress.verbosity() is None
    with pytest.raises(ValueError, match="verbosity"):
        _progress.set_verbosity(5)
