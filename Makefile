# kbn: the README's commands. `make reproduce` and `make test` each set up
# what they need: the virtual env, the package, the embedded data set.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= fashion_mnist
ARGS   ?=
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: reproduce test test-fast lint format train gradcheck bench install data clean docs

# The report's four studies (gradient check, BN vs no BN, coarse-to-fine
# search, eta study) -> reports/<data set>/report.md. QUICK=1: small sizes.
reproduce: install data
	$(BIN)/kbn reproduce --data $(DATA) $(if $(QUICK),--quick) $(ARGS)

# Every test: those in this process on both cores (a file's tests on one), then
# those that start processes (marked slow), one at a time.
test: install
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile
	$(BIN)/python -m pytest -q -m slow

# Every test but those that start processes: a quick check while editing.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile

# The style, checked: ruff's lint and format, mypy on the typed public API.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

train: install data
	$(BIN)/kbn train --data $(DATA) $(ARGS)

gradcheck: install
	$(BIN)/kbn gradcheck $(ARGS)

# Seconds per epoch of the report's network: NumPy vs Keras's own layers vs kbn.
# ARGS="--data folder:../shared/data/cifar10-jpeg/train" for real images.
bench: install
	$(BIN)/kbn bench $(ARGS)

# The documentation site (docs/, mkdocs.yml) -> site/; any warning fails it.
docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

$(BIN)/mkdocs: $(BIN)/kbn pyproject.toml
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $@

install: $(BIN)/kbn

$(BIN)/kbn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian's dataset-fashion-mnist: the embedded data set.
data:
	@if [ ! -f $(FASHION_MNIST) ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	    else \
	        echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'"; \
	        exit 1; \
	    fi; \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
