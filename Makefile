# The colearn learner fleet. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= all,dev
PYTEST_ARGS ?=

.PHONY: install proto lock test lint demo bench clean

install: $(VENV)/.installed

# Reinstall whenever the dependency declarations change.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[$(EXTRAS)]"
	touch $@

# Regenerates the committed stubs; tests/contract/test_generated_code_is_fresh.py fails when they are stale.
proto: install
	$(BIN)/python -m grpc_tools.protoc -Icolearn_contract/v1=proto/colearn/v1 \
		--python_out=proto --pyi_out=proto --grpc_python_out=proto colearn_contract/v1/learner.proto

lock: install
	{ head -3 requirements.lock; $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/colearn-backend demo

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
