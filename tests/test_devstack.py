"""`dev up` waits for a broker that is busy starting, and not for a silent one."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from streams.dev.devstack import DevStack, DevStackError, StackProcess, write_record
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
    stack(tmp_path)._wait_for("kafka", ready.is_set, lambda: False, logfile, timeout=1.0)
    assert ready.is_set()
    assert time.monotonic() - started >= 2.0


def test_a_silent_process_is_given_up_on_after_the_timeout(tmp_path):
    logfile = tmp_path / "server.log"
    logfile.write_text("started\n")
    started = time.monotonic()
    with pytest.raises(DevStackError, match=r"kafka did not answer within 1s; see .*server.log"):
        stack(tmp_path)._wait_for("kafka", lambda: False, lambda: False, logfile,
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


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def test_brokers_take_every_100th_port_and_a_folder_each(tmp_path):
    dev = DevStack(Settings(cache_dir=str(tmp_path), kafka="127.0.0.1:9092"), brokers=3)
    assert dev.bootstrap == "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
    assert [b.controller.port for b in dev.brokers] == [9093, 9193, 9293]
    assert len({b.home for b in dev.brokers}) == 3
    single = stack(tmp_path)
    assert [b.home for b in single.brokers] == [single.kafka_dir]  # the folders of before


def test_status_json_lists_the_recorded_processes_and_down_stops_them_all(tmp_path):
    """`dev down` stops what `dev up --brokers 3` started, though given no option."""
    procs = [sleeper() for _ in range(4)]
    try:
        three = DevStack(Settings(cache_dir=str(tmp_path)), brokers=3)
        write_record(three.record, 3, [StackProcess("kafka", n, 9092 + 100 * (n - 1),
                                                    procs[n - 1].pid) for n in (1, 2, 3)]
                     + [StackProcess("redis", 0, 6379, procs[3].pid)])
        listed = stack(tmp_path).processes()
        assert {(p["role"], p["id"], p["port"], p["pid"]) for p in listed} == {
            ("kafka", 1, 9092, procs[0].pid), ("kafka", 2, 9192, procs[1].pid),
            ("kafka", 3, 9292, procs[2].pid), ("redis", 0, 6379, procs[3].pid)}
        procs[1].kill()
        procs[1].wait()
        assert next(p for p in stack(tmp_path).processes() if p["id"] == 2)["pid"] is None
        lines = stack(tmp_path).down()
        assert len(lines) == 3  # the killed one was not running
        assert all(p.wait(timeout=10) == -signal.SIGTERM for p in procs if p is not procs[1])
        assert not three.record.exists()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_up_with_other_options_than_the_running_stacks_starts_nothing(tmp_path):
    proc = sleeper()
    try:
        three = DevStack(Settings(cache_dir=str(tmp_path)), brokers=3)
        write_record(three.record, 3, [StackProcess("kafka", 1, 9092, proc.pid)])
        with pytest.raises(DevStackError, match=r"runs with --brokers 3: `rankflow dev down` "
                                                r"first, or give --brokers 3"):
            stack(tmp_path).up()
    finally:
        proc.kill()
        proc.wait()


def test_a_running_process_of_an_older_rankflows_pid_file_is_recorded_too(tmp_path):
    proc = sleeper()
    try:
        dev = stack(tmp_path)
        dev.kafka_dir.mkdir(parents=True)
        (dev.kafka_dir / "kafka.pid").write_text(str(proc.pid))
        assert dev.processes() == [{"role": "kafka", "id": 1, "port": 9092, "pid": proc.pid}]
        dev.down()
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_the_redis_cluster_takes_ports_7000_to_7005_and_a_folder_each(tmp_path):
    dev = DevStack(Settings(cache_dir=str(tmp_path)), redis_cluster=True)
    assert [e.port for e in dev.cluster_nodes] == list(range(7000, 7006))
    assert len({dev._cluster_home(e) for e in dev.cluster_nodes}) == 6
    assert dev.cluster_url == "redis://127.0.0.1:7000/0"
    assert StackProcess("redis-cluster", 4, 7004, 1).name == "redis-cluster 4"
    with pytest.raises(DevStackError, match="exclude"):
        DevStack(Settings(cache_dir=str(tmp_path)), sentinel=True, redis_cluster=True)
