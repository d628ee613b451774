# Two commands on a fresh machine:  make book   and   make test
#
#   make book     install .[book]; execute only the pages that are missing or stale (at PROFILE,
#                 default: full if PyTorch sees a GPU, else smoke; a stale page committed at a
#                 higher profile is kept, and the command to re-render it is printed); build the
#                 HTML into _build/html from book/executed/
#   make run PROFILE=small [NOTEBOOKS="03_noisy_student 05_robustness"] [ARGS="-p seeds=[0]"]
#                 re-execute notebooks at a profile (all of them without NOTEBOOKS). Below the
#                 committed page's profile the run writes only to build/ (scratch results store
#                 build/results-<profile>/), never to results/ or book/executed/
#   make html     build the HTML from book/executed/ only
#   make status   each page: fresh, stale (and why) or missing
#   make test     install .[book,test]; the test suite
#   make lab [PROFILE=small NOTEBOOKS=03_noisy_student]
#                 install .[book,lab]; JupyterLab at the repository root; with PROFILE, first
#                 write build/lab/<profile>/<stem>.ipynb with that profile's parameters injected
#   make clean    remove _build/ and build/ (executed copies, scratch stores)
#
# VENV=path: another virtual environment (created if missing; installs into it when
# pyproject.toml is newer than its stamp). Data: $RETHINK_DATA (a folder with the dataset
# archives), else downloaded to ~/.cache/rethink/data.

PYTHON3   ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PROFILE   ?=
NOTEBOOKS ?=
ARGS      ?=

.PHONY: book pages run needs-profile html status test lab setup setup-test setup-lab clean

# pages: run --stale (what make book executes); see the header
book: setup pages html

setup: $(VENV)/.rethink-book
setup-test: $(VENV)/.rethink-test
setup-lab: $(VENV)/.rethink-lab

# one stamp per set of extras: make test after make book installs only [test]'s additions
$(VENV)/.rethink-book: pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -e '.[book]'
	touch $@

$(VENV)/.rethink-test: pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -e '.[book,test]'
	touch $@ $(VENV)/.rethink-book

$(VENV)/.rethink-lab: pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -e '.[book,lab]'
	touch $@ $(VENV)/.rethink-book

pages: setup
	$(PY) -m rethink.book run --stale --profile $(or $(PROFILE),auto)

run: needs-profile setup
	$(PY) -m rethink.book run --profile $(PROFILE) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS)) $(ARGS)

needs-profile:
	@test -n "$(PROFILE)" || { echo "error: make run needs a profile: make run PROFILE=smoke|small|full|paper [NOTEBOOKS=\"01_zoo ...\"]" >&2; exit 2; }

html: setup
	$(PY) -m rethink.book build

status: setup
	$(PY) -m rethink.book status

test: setup-test
	$(PY) -m pytest tests

lab: setup-lab
	$(if $(PROFILE),$(PY) -m rethink.book prepare --profile $(PROFILE) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS)) &&) $(VENV)/bin/jupyter lab

clean:
	rm -rf _build build .pytest_cache
