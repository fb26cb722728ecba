# Two entry points on a fresh clone:
#   make demo   set up .venv, train a digit recogniser, report its test accuracy
#   make test   set up .venv (with test tools) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test venv dev lint clean browsers keras-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The venv is marked as built by a stamp file, so a changed pyproject rebuilds it.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .[serve]
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e .[serve,dev]
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: venv
	$(BIN)/cnnlab train --model seed000-cnn --epochs 5 --fallback-dataset digits --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: dev
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

# TensorFlow for the Keras side of benchmarks/epoch_time.py and folder_epoch.py only;
# never a dependency.
keras-venv: .tfvenv/bin/python
.tfvenv/bin/python:
	$(PYTHON) -m venv .tfvenv
	.tfvenv/bin/python -m pip install --quiet --disable-pip-version-check tensorflow-cpu
