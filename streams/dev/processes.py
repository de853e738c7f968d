"""Worker processes for the benchmarks and the integration tests: start, stop, measure.

Dev-only tooling (bench/ and tests/ use it; nothing in the pipeline imports it).

Responsible for:

* starting a worker as a process of its own (`WorkerProcess`): `python -m streams.ops.cli
  worker` by default, or any other command line (bench/naive.py's worker, a test's
  sleeper), with the caller's environment and working directory, its stdout and stderr
  into a log file (or inherited);
* stopping a process as an operator would (`stop_process`, `WorkerProcess.stop`): a
  signal, SIGTERM by default, a bounded wait, then SIGKILL if it has not exited;
* reading a process's resident memory, peak and current, and its CPU time from /proc
  (`process_usage`, `WorkerProcess.usage`): Linux only, no extra dependency.

`WorkerProcess` is a `subprocess.Popen`, so code that polls, signals or waits for a
worker keeps doing so (`poll()`, `send_signal()`, `wait()`, `kill()`, `pid`, `returncode`);
as a context manager it stops the worker on exit.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

#: the command line of a rankflow worker (`-m`: the working directory comes first on sys.path)
WORKER_ARGV: tuple[str, ...] = (sys.executable, "-m", "streams.ops.cli", "worker")
#: seconds `WorkerProcess.stop` waits after its signal before it sends SIGKILL
STOP_TIMEOUT_S = 60.0


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S,
                 sig: int = signal.SIGTERM) -> int:
    """Send `sig` to `proc` if it is still running and wait up to `timeout` seconds for
    it to exit; SIGKILL it (and wait) if it has not. Returns its exit code (negative: the
    signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.wait()


@dataclass(frozen=True)
class Usage:
    """A process's memory and CPU time, as /proc reports them at one moment."""

    #: resident set size (VmRSS); None when the kernel reports none (a zombie)
    rss_bytes: int | None
    #: peak resident set size so far (VmHWM); None as above
    peak_rss_bytes: int | None
    #: user + system CPU time so far, in seconds (a figure that contention leaves alone)
    cpu_seconds: float

    @property
    def rss_mb(self) -> float:
        """VmRSS in MiB; NaN when unknown."""
        return math.nan if self.rss_bytes is None else self.rss_bytes / 2**20

    @property
    def peak_rss_mb(self) -> float:
        """VmHWM in MiB; NaN when unknown."""
        return math.nan if self.peak_rss_bytes is None else self.peak_rss_bytes / 2**20


def process_usage(pid: int) -> Usage:
    """Memory (/proc/<pid>/status) and CPU time (/proc/<pid>/stat) of a live process;
    raises FileNotFoundError once it has been reaped."""
    memory: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) * 1024  # reported in kB
    # the command name, in parentheses, may hold spaces: the fields follow its last ")"
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return Usage(memory.get("VmRSS"), memory.get("VmHWM"), ticks / os.sysconf("SC_CLK_TCK"))


class WorkerProcess(subprocess.Popen[bytes]):
    """A worker started as its own process, at construction.

    `env` is its whole environment (pass `{**os.environ, ...}` to extend the current
    one); with `log`, its stdout and stderr go to that file (truncated first), else they
    are inherited; `cwd` is its working directory; `argv` its command line, a rankflow
    worker unless given.
    """

    def __init__(self, env: Mapping[str, str], log: Path | None = None, *,
                 cwd: str | os.PathLike[str] | None = None,
                 argv: Sequence[str] = WORKER_ARGV) -> None:
        self.log = log
        if log is None:
            super().__init__(list(argv), env=env, cwd=cwd)
        else:
            with log.open("wb") as out:  # the child keeps its own descriptor of the file
                super().__init__(list(argv), env=env, cwd=cwd, stdout=out,
                                 stderr=subprocess.STDOUT)

    def stop(self, timeout: float = STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> int:
        """`sig` (SIGTERM: a graceful stop), up to `timeout` seconds, then SIGKILL; the exit
        code. `kill()` (Popen's) sends SIGKILL at once and does not wait."""
        return stop_process(self, timeout, sig)

    def usage(self) -> Usage:
        """The worker's memory and CPU time now (it must not have been reaped yet)."""
        return process_usage(self.pid)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.stop()
        finally:
            super().__exit__(exc_type, exc, tb)
