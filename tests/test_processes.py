"""streams.dev.processes without a broker: a `python -c` child started, stopped, measured."""

import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from streams.dev.processes import (
    WORKER_ARGV,
    Usage,
    WorkerProcess,
    process_usage,
    stop_process,
)

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
# ignores SIGTERM, so only the SIGKILL after the timeout ends it
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)"]
# exits 3 on SIGTERM, as a worker that cleans up does
GRACEFUL = [sys.executable, "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); "
            "print('up', flush=True); time.sleep(60)"]
SPIN = [sys.executable, "-c",
        "import time; t = time.process_time()\n"
        "while time.process_time() - t < 0.5: pass\n"
        "print('spun', flush=True); time.sleep(60)"]


def wait_for_line(proc: WorkerProcess, line: str, timeout: float = 20) -> None:
    assert proc.log is not None
    deadline = time.monotonic() + timeout
    while line not in proc.log.read_text():
        assert proc.poll() is None, f"exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"no {line!r} in {proc.log}"
        time.sleep(0.02)


def test_the_default_command_line_is_a_rankflow_worker():
    assert (sys.executable, "-m", "streams.ops.cli", "worker") == WORKER_ARGV


def test_stop_sends_sigterm_and_returns_the_exit_code(tmp_path):
    proc = WorkerProcess(os.environ, tmp_path / "w.log", argv=GRACEFUL)
    assert isinstance(proc, subprocess.Popen)
    wait_for_line(proc, "up")
    assert proc.poll() is None and proc.returncode is None
    assert proc.stop(timeout=10) == 3
    assert proc.returncode == 3
    assert proc.stop() == 3  # stopping a stopped process changes nothing


def test_stop_kills_a_process_that_ignores_sigterm_after_the_timeout(tmp_path):
    proc = WorkerProcess(os.environ, tmp_path / "w.log", argv=STUBBORN)
    wait_for_line(proc, "up")
    started = time.monotonic()
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10


def test_stop_with_another_signal(tmp_path):
    proc = WorkerProcess(os.environ, tmp_path / "w.log", argv=GRACEFUL)
    wait_for_line(proc, "up")
    assert proc.stop(timeout=10, sig=signal.SIGKILL) == -signal.SIGKILL


def test_kill_is_popens_sigkill(tmp_path):
    proc = WorkerProcess(os.environ, tmp_path / "w.log", argv=SLEEPER)
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_stop_process_works_on_any_popen():
    proc = subprocess.Popen(STUBBORN, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    assert stop_process(proc, timeout=0.2) == -signal.SIGKILL
    proc = subprocess.Popen(SLEEPER, stdout=subprocess.DEVNULL)
    assert stop_process(proc, timeout=10) == -signal.SIGTERM


def test_the_log_gets_stdout_and_stderr_and_env_and_cwd_are_passed(tmp_path):
    script = ("import os, sys; print('out', os.environ['PROBE'], os.getcwd()); "
              "print('err', file=sys.stderr)")
    log = tmp_path / "w.log"
    log.write_text("old content\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = WorkerProcess({**os.environ, "PROBE": "p-123"}, log, cwd=work,
                         argv=[sys.executable, "-c", script])
    assert proc.wait(timeout=20) == 0
    assert log.read_text().splitlines() == [f"out p-123 {work}", "err"]


def test_without_a_log_the_output_is_inherited(capfd):
    proc = WorkerProcess(os.environ, argv=[sys.executable, "-c", "print('inherited')"])
    assert proc.log is None
    assert proc.wait(timeout=20) == 0
    assert "inherited" in capfd.readouterr().out


def test_the_context_manager_stops_the_process(tmp_path):
    with WorkerProcess(os.environ, tmp_path / "w.log", argv=GRACEFUL) as proc:
        wait_for_line(proc, "up")
    assert proc.returncode == 3
    with pytest.raises(RuntimeError), \
            WorkerProcess(os.environ, tmp_path / "w2.log", argv=SLEEPER) as other:
        raise RuntimeError("a failing test")
    assert other.returncode == -signal.SIGTERM


def test_usage_of_the_current_process_matches_getrusage_and_times():
    t = time.process_time()
    while time.process_time() - t < 0.2:  # some CPU time to see
        pass
    usage = process_usage(os.getpid())
    times = os.times()
    assert isinstance(usage, Usage)
    assert usage.rss_bytes is not None and usage.peak_rss_bytes is not None
    assert 5 * 2**20 < usage.rss_bytes <= usage.peak_rss_bytes < 64 * 2**30
    # ru_maxrss (kB on Linux) is the same peak, though the kernel updates it lazily
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert abs(usage.peak_rss_bytes - maxrss) < max(8 * 2**20, maxrss // 10)
    assert usage.rss_mb == usage.rss_bytes / 2**20
    assert usage.peak_rss_mb == usage.peak_rss_bytes / 2**20
    assert 0.2 <= usage.cpu_seconds <= times.user + times.system + 0.05


def test_usage_of_a_child_sees_its_cpu_time_and_memory(tmp_path):
    with WorkerProcess(os.environ, tmp_path / "w.log", argv=SPIN) as proc:
        wait_for_line(proc, "spun")
        usage = proc.usage()
        assert process_usage(proc.pid).cpu_seconds >= usage.cpu_seconds
        assert 0.45 <= usage.cpu_seconds < 10
        assert usage.rss_bytes is not None and usage.peak_rss_bytes is not None
        assert 2**20 < usage.rss_bytes <= usage.peak_rss_bytes < 2**30


def test_usage_of_a_zombie_has_no_memory_and_of_a_reaped_process_raises():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT) is None:  # exited, not reaped
        assert time.monotonic() < deadline
        time.sleep(0.02)
    usage = process_usage(proc.pid)
    assert usage.rss_bytes is None and usage.peak_rss_bytes is None
    assert usage.rss_mb != usage.rss_mb and usage.peak_rss_mb != usage.peak_rss_mb  # NaN
    assert usage.cpu_seconds >= 0
    pid = proc.pid
    proc.wait()
    with pytest.raises(FileNotFoundError):
        process_usage(pid)
