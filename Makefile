# One-command set-up, demo and tests. Everything runs inside .venv (Python 3.11).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.setup-complete

.PHONY: setup demo test lint clean-venv

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml tools/install_detectron2.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_PINS)
	$(PY) tools/install_detectron2.py
	$(PIP) install --quiet --no-build-isolation -e '.[test]' $(TORCH_PINS)
	$(PY) -c "import torch, detectron2, siamese_detr; print('torch', torch.__version__, '| detectron2', detectron2.__version__, '| siamese_detr ok')"
	touch $@

demo: setup
	$(PY) tools/run_demo.py

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m flake8 projects tools tests configs benchmarks datasets

clean-venv:
	rm -rf $(VENV)
