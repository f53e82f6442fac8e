# kbn: the README's commands. `make reproduce` and `make test` each set up
# what they need: the virtual env, the package, the embedded data set.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= fashion_mnist
ARGS   ?=
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: reproduce test train gradcheck install data clean

# The report's seed net (3 layers [50, 30] with BN, eta 0.0864 decayed by
# 0.8 per epoch, lambda 1.8245e-4, 10k train / 10k val) and its gradient check.
reproduce: install data
	$(BIN)/kbn gradcheck
	$(BIN)/kbn train --data $(DATA) --train-size 10000 --val-size 10000 \
	    --hidden 50,30 --eta 0.0864 --decay 0.8 --lam 1.8245e-4 --epochs 20 \
	    --run-name seed-net --save logs/seed-net/model.keras $(ARGS)

test: install
	$(BIN)/python -m pytest -q

train: install data
	$(BIN)/kbn train --data $(DATA) $(ARGS)

gradcheck: install
	$(BIN)/kbn gradcheck $(ARGS)

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
