# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Nothing here may reach the internet for weights; the toolkit uses its offline sources.
export TFX_TRANSFER_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-offline.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-offline.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/tfx-transfer demo

clean:
	rm -rf $(VENV) build *.egg-info
