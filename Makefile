# Build, run and test mysticchallenge. Needs only Rust, Python 3 and pip;
# Python packages go into a virtualenv at $(VENV).

VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
GATEWAY := target/release/mysticchallenge
ARGS    ?=
PY_SOURCES := pyproject.toml $(shell find distribute_challenge mystic_wire worker_shim -name '*.py' 2>/dev/null)

.PHONY: run test build venv lint fmt clean

## run: build everything and start the gateway on 127.0.0.1:8000 (extra flags: ARGS="...")
run: build
	$(GATEWAY) --python $(PYTHON) $(ARGS)

## test: lint, Rust tests, the Python suite, and test.py against a live gateway
test: build lint
	MYSTIC_PYTHON=$(abspath $(PYTHON)) cargo test --release
	MYSTIC_GATEWAY_BIN=$(abspath $(GATEWAY)) $(PYTHON) -m pytest tests/python
	scripts/with-gateway $(PYTHON) --workers 2 -- $(PYTHON) test.py

build: venv
	cargo build --release

venv: $(VENV)/.installed

$(VENV)/.installed: $(PY_SOURCES)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,load]'
	touch $@

lint: venv
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv
	cargo fmt
	$(VENV)/bin/ruff format .

clean:
	cargo clean
	rm -rf $(VENV)
