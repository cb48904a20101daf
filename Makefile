# One-command set-up, demo and tests. Everything runs inside .venv (Python 3.11).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := "$(PY)" -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.setup-complete
# Every pip install of the set-up takes the versions pinned here (pip -c; tools/freeze_constraints.py writes
# the file and says how to move the pins); CONSTRAINTS= installs the package index's latest instead.
CONSTRAINTS ?= constraints.txt
PIP_PINNED := $(if $(CONSTRAINTS),-c "$(CONSTRAINTS)")
# A fresh .venv takes about 6 GiB (torch 2.14.1 is a CUDA build, used on the CPU here).
SETUP_FREE_GIB ?= 7
# make test's parallel pytest workers (pytest-xdist): auto = one per usable CPU, at most 4 (tests/conftest.py);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= auto
# make cannot name a file whose path has a space: the venv's stamp file is a target (the interpreter's
# path may have spaces: every recipe quotes it).
ifeq ($(words $(VENV)),0)
$(error VENV is empty: give the venv's folder, e.g. make setup VENV=/elsewhere/venv (default .venv))
else ifneq ($(words $(VENV)),1)
$(error VENV="$(VENV)": the venv's path must not contain spaces (make cannot name files with spaces); choose another, e.g. make setup VENV=/elsewhere/venv)
endif
ifneq ($(words $(CONSTRAINTS)),$(if $(CONSTRAINTS),1,0))
$(error CONSTRAINTS="$(CONSTRAINTS)": the constraints file's path must not contain spaces (make cannot name files with spaces); move it, or give CONSTRAINTS= to install without pins)
endif

.PHONY: setup check-disk demo test lint clean-venv help

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml tools/install_detectron2.py Makefile $(CONSTRAINTS)
	test -x "$(PY)" || $(MAKE) --no-print-directory check-disk
	test -x "$(PY)" || "$(PYTHON)" -m venv "$(VENV)"
	$(PIP) install --quiet $(PIP_PINNED) $(TORCH_PINS)
	"$(PY)" tools/install_detectron2.py $(if $(CONSTRAINTS),--constraint "$(CONSTRAINTS)")
	$(PIP) install --quiet --no-build-isolation $(PIP_PINNED) -e '.[test]' $(TORCH_PINS)
	"$(PY)" -c "import torch, detectron2, siamese_detr; print('torch', torch.__version__, '| detectron2', detectron2.__version__, '| siamese_detr ok')"
	printf 'constraints=%s\n' "$(CONSTRAINTS)" > $@

ifneq ($(CONSTRAINTS),)
# (only reached when the file is missing, or under make -B, where it is there)
$(CONSTRAINTS):
	@test -f "$@" || { echo "make setup: the constraints file $(CONSTRAINTS) is not there: restore it (git checkout -- constraints.txt), give another with CONSTRAINTS=FILE, or install without pins: make setup CONSTRAINTS=" >&2; exit 1; }
endif

check-disk:
	@test ! -e "$(VENV)" -o -d "$(VENV)" || { echo "make setup: VENV=$(VENV) is a file, not a folder: give the venv's folder (made if missing), e.g. make setup VENV=/elsewhere/venv" >&2; exit 1; }
	@command -v "$(PYTHON)" >/dev/null 2>&1 || { echo "make setup: no Python interpreter $(PYTHON) (neither a command on the PATH nor an executable file): install Python 3.11, or give its path: make setup PYTHON=/path/to/python3.11" >&2; exit 1; }
	@"$(PYTHON)" -c "import os, shutil, sys; d = os.path.dirname(os.path.abspath('$(VENV)')); free = shutil.disk_usage(d).free / 2**30; sys.exit(0) if free >= $(SETUP_FREE_GIB) else sys.exit(f'make setup: a new $(VENV) needs about 6 GiB (torch is a CUDA build) and {d} has {free:.1f} GiB free; free at least $(SETUP_FREE_GIB) GiB there, or put the venv on a disk with room: make setup VENV=/elsewhere/venv (SETUP_FREE_GIB=N lowers this check)')"

demo: setup
	"$(PY)" tools/run_demo.py

test: setup
	"$(PY)" -m pytest -q -n $(TEST_WORKERS) tests

lint: setup
	"$(PY)" -m flake8 projects tools tests configs benchmarks datasets

clean-venv:
	rm -rf $(VENV)

help:
	@echo "make setup       create $(VENV) (Python 3.11, torch 2.14.1, detectron2, this project); again when setup.cfg, pyproject.toml, the Makefile or the constraints change"
	@echo "make demo        set up, then the demo on the built-in dataset (tools/run_demo.py; output/demo/)"
	@echo "make test        set up, then the test suite (pytest tests, on TEST_WORKERS parallel workers)"
	@echo "make lint        set up, then flake8"
	@echo "make clean-venv  delete $(VENV)"
	@echo "variables: PYTHON=$(PYTHON) (the interpreter of a new venv), VENV=$(VENV) (the venv's folder),"
	@echo "           SETUP_FREE_GIB=$(SETUP_FREE_GIB) (free GiB a new venv needs),"
	@echo "           CONSTRAINTS=$(CONSTRAINTS) (the versions the set-up installs; empty: the index's latest),"
	@echo "           TEST_WORKERS=$(TEST_WORKERS) (make test's workers: auto = one per CPU, at most 4; 0 = one process)"
