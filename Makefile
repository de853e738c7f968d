VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install demo test unit integration lint typecheck bench clean dev-up dev-down browser

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/rankflow demo

dev-up: install
	$(BIN)/rankflow dev up

dev-down: install
	$(BIN)/rankflow dev down

lint: install
	$(BIN)/ruff check streams schemas tests bench
	$(BIN)/mypy streams schemas

unit: install
	$(BIN)/pytest -m "not integration"

integration: install
	$(BIN)/rankflow dev up
	$(BIN)/pytest -m integration

# Debian's Chromium for the browser test (Playwright drives it; it downloads no browser).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium missing: the browser test will be skipped (apt-get install chromium)"

test: install lint browser
	$(BIN)/rankflow dev up
	$(BIN)/pytest

# The side-by-side benchmark (issue 5): raw ceiling, naive faust, rankflow, latency;
# then a million accounts (issue 14: bench/million.py).
bench: install
	$(BIN)/rankflow dev up
	$(PY) bench/compare.py --million

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
