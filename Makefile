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

# Headless Chromium lets one test render the HTML report (skipped without it). Best effort:
# Debian's package when this runs as root; nothing else depends on it.
BROWSER := $(VENV)/.browser
$(BROWSER): $(STAMP)
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium-headless-shell >/dev/null 2>&1; } || \
	  echo "note: no Chromium here; the HTML rendering test will be skipped"
	@touch $@

test: install $(BROWSER)
	$(BIN)/python -m pytest

# Every recipe on its built-in data, strategies compared; ends with the path of the HTML report.
demo: install
	$(BIN)/tfx-transfer demo --quick

clean:
	rm -rf $(VENV) build *.egg-info
