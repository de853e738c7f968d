"""The folders show the pipeline: the pure core loads no broker or store client."""

import pkgutil
import subprocess
import sys

import streams.core

FORBIDDEN = ("faust", "aiokafka", "redis", "pydantic_settings", "mode")


def test_the_core_imports_no_broker_store_or_settings_library():
    modules = [f"streams.core.{m.name}" for m in pkgutil.iter_modules(streams.core.__path__)]
    assert len(modules) >= 8
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"streams.core pulls in {out}"
