"""`rankflow demo` as a new user runs it: the page's address, the live top 10 and a short
status on the terminal, the services' logs in files it names, Ctrl-C stops it all."""

import queue
import re
import signal
import subprocess
import sys
import threading

import httpx

from tests.integration.conftest import free_port


def test_the_demo_prints_its_own_lines_and_stops_at_ctrl_c(deploy):
    d = deploy()
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "streams.ops.cli", "demo", "--rate", "500",
                             "--duration", "120"],
                            env={**d.env, "RANKFLOW_API_PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout],  # type: ignore
                     daemon=True).start()
    seen: list[str] = []
    try:
        while not any(re.match(r"\s+1\. ", line) for line in seen):  # a top-10 line
            seen.append(lines.get(timeout=90))
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=40)
    assert code == 0
    text = "".join(seen)
    assert f"The live page: http://127.0.0.1:{port}/" in text
    logs = re.search(r"Logs of the worker, the API and the traffic: (\S+)/\{", text)
    assert logs, text
    assert "events counted" in text
    # faust's banner and subscription tables go to the worker's log, not the terminal
    assert "┌" not in text and "faust" not in text.lower(), text
