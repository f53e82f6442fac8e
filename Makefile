# kbn: the README's commands. `make reproduce` and `make test` each set up
# what they need: the virtual env, the package, the embedded data set.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= fashion_mnist
ARGS   ?=
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: reproduce test train gradcheck bench install data clean

# The seed report's four studies (gradient check, BN vs no BN, coarse-to-fine
# search, eta study) -> reports/<data set>/report.md. QUICK=1: small sizes.
reproduce: install data
	$(BIN)/kbn reproduce --data $(DATA) $(if $(QUICK),--quick) $(ARGS)

test: install
	$(BIN)/python -m pytest -q

train: install data
	$(BIN)/kbn train --data $(DATA) $(ARGS)

gradcheck: install
	$(BIN)/kbn gradcheck $(ARGS)

# Seconds per epoch of the seed net: NumPy vs Keras's own layers vs kbn.
# ARGS="--data folder:../shared/data/cifar10-jpeg/train" for real images.
bench: install
	$(BIN)/kbn bench $(ARGS)

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
