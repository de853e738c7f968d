"""`dev up` waits for a broker that is busy starting, and not for a silent one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from streams.dev.devstack import DevStack, DevStackError
from streams.ops.settings import Settings


def stack(tmp_path: Path) -> DevStack:
    return DevStack(Settings(cache_dir=str(tmp_path)))


def test_a_process_whose_log_keeps_growing_is_waited_for_past_the_timeout(tmp_path):
    logfile = tmp_path / "server.log"
    logfile.write_text("")
    ready = threading.Event()

    def loading() -> None:  # logs a line every 0.2 s for 2.4 s, then answers
        for n in range(12):
            with logfile.open("a") as out:
                out.write(f"loaded log {n}\n")
            time.sleep(0.2)
        ready.set()

    threading.Thread(target=loading, daemon=True).start()
    started = time.monotonic()
    stack(tmp_path)._wait_for("kafka", ready.is_set, tmp_path / "no.pid", logfile, timeout=1.0)
    assert ready.is_set()
    assert time.monotonic() - started >= 2.0


def test_a_silent_process_is_given_up_on_after_the_timeout(tmp_path):
    logfile = tmp_path / "server.log"
    logfile.write_text("started\n")
    started = time.monotonic()
    with pytest.raises(DevStackError, match=r"kafka did not answer within 1s; see .*server.log"):
        stack(tmp_path)._wait_for("kafka", lambda: False, tmp_path / "no.pid", logfile,
                                  timeout=1.0)
    assert time.monotonic() - started < 3.0


def test_reset_deletes_the_brokers_data_and_keeps_the_jars(tmp_path):
    dev = stack(tmp_path)
    (dev.kafka_dir / "data" / "topic-0").mkdir(parents=True)
    (dev.kafka_dir / "classpath.txt").write_text("a.jar")
    lines = dev.reset()
    assert not (dev.kafka_dir / "data").exists()
    assert (dev.kafka_dir / "classpath.txt").read_text() == "a.jar"
    assert lines[-1] == f"kafka: deleted {dev.kafka_dir / 'data'}"
