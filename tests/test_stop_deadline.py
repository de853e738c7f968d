"""The stop deadline ends the process once its seconds are up, with its own exit code."""

from __future__ import annotations

import logging
import threading

from streams.ops.stop_deadline import CUT_SHORT_EXIT, start_deadline


def test_the_deadline_exits_with_its_code_and_says_why(caplog):
    exited: list[int] = []
    done = threading.Event()

    def exit_now(code: int) -> None:
        exited.append(code)
        done.set()

    with caplog.at_level(logging.ERROR):
        start_deadline(0.05, exit_now)
        assert done.wait(5)
    assert exited == [CUT_SHORT_EXIT]
    assert "the graceful stop did not finish within 0 s" in caplog.text
