# tinygen: the two commands are `make demo` and `make test`.
#
#   make demo    create .venv, install tinygen, train the GAN and the VAE briefly, write image grids
#   make test    create .venv with the test extras and run the whole test suite
#   make bench   the convolution micro-benchmarks (with PARITY=1: side by side with PyTorch)
#   make lint    ruff check and ruff format --check
#
# PARITY=1 also installs PyTorch (CPU) so that the parity tests and torch columns run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test bench lint fashion-mnist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-base

$(VENV)/.installed-torch: | $(BIN)/python
	$(BIN)/pip install --quiet '$(TORCH_SPEC)'
	touch $@

TORCH_DEP := $(if $(filter 1,$(PARITY)),$(VENV)/.installed-torch,)

# Fashion-MNIST comes from the Debian package dataset-fashion-mnist. Install it where we run as
# root with apt-get; elsewhere the tests that need it skip with a reason, and the demo uses the
# scikit-learn digits that ship inside scikit-learn.
fashion-mnist:
	@if [ ! -d $(FASHION_DIR) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing dataset-fashion-mnist with apt-get"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			dataset-fashion-mnist >/dev/null) || echo "could not install dataset-fashion-mnist"; \
	fi

test: $(VENV)/.installed-test $(TORCH_DEP) fashion-mnist
	$(BIN)/ruff check --output-format concise .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

demo: $(VENV)/.installed-base fashion-mnist
	$(BIN)/python -m tinygen.demo --out runs/demo

bench: $(VENV)/.installed-test $(TORCH_DEP)
	$(BIN)/python -m benchmarks.conv $(BENCH_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
