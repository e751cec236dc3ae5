# Build, run and test mysticchallenge. Needs only Rust, Python 3 and pip;
# everything goes into a virtualenv at $(VENV): `pip install -e` builds the
# gateway and the extension once (setuptools-rust, release profile, into
# target/release), puts the gateway on the venv's PATH and the extension in
# place beside the editable Python packages.

VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
GATEWAY := target/release/mysticchallenge
ARGS    ?=
SOURCES := pyproject.toml Cargo.toml Cargo.lock build.rs native/Cargo.toml \
           $(shell find distribute_challenge mystic_native mystic_wire worker_shim src native/src proto -type f -not -path '*/__pycache__/*' -not -name '*.so' 2>/dev/null)

.PHONY: run test build venv lint fmt clean

## run: build everything and start the gateway on 127.0.0.1:8000 (extra flags: ARGS="...")
run: build
	$(VENV)/bin/mysticchallenge $(ARGS)

## test: lint, Rust tests, the Python suite, and test.py against a live gateway
test: build lint
	MYSTIC_PYTHON=$(abspath $(PYTHON)) cargo test --release
	MYSTIC_GATEWAY_BIN=$(abspath $(GATEWAY)) $(PYTHON) -m pytest tests/python
	scripts/with-gateway $(PYTHON) --workers 2 -- $(PYTHON) test.py

## build (= venv): the virtualenv, the packages and the gateway, rebuilt when a source changes
build: venv

venv: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,load]'
	touch $@

lint: venv
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv
	cargo fmt --all
	$(VENV)/bin/ruff format .

clean:
	cargo clean
	rm -rf $(VENV) build mystic_native/_native*.so
