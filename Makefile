# The README's two commands: `make run` (set up, then run the main job) and `make test` (set up,
# then lint and run the test suite). Both create .venv on first use and reuse it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: run test setup viz repro clean-venv

setup: $(STAMP)

# Reinstall only when the dependency list changes. torch/torchvision come from the machine's
# local wheel store through plain pip; everything else from the package registry.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

# Replay the DVC stages (data → train → requests) with the project's tools on PATH.
repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

viz: $(STAMP)
	$(BIN)/kedro viz build --include-previews

clean-venv:
	rm -rf $(VENV)
