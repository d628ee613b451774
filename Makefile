# Two commands on a fresh machine:  make book   and   make test
# PROFILE: smoke | small | full | paper (default: full if PyTorch sees a GPU, else smoke).
# Data: $RETHINK_DATA (a folder with the dataset archives), else downloaded to ~/.cache/rethink/data.

PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.rethink-installed
PROFILE ?=

.PHONY: book run html test setup clean

book: setup run html

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -e .
	touch $(STAMP)

run: setup
	@profile="$(PROFILE)"; \
	if [ -z "$$profile" ]; then \
	  profile=$$($(PY) -c 'import torch; print("full" if torch.cuda.is_available() else "smoke")'); \
	fi; \
	echo "profile: $$profile"; \
	$(PY) -m rethink.book run --profile "$$profile"

html: setup
	$(PY) -m rethink.book build

test: setup
	$(PY) -m pytest tests

clean:
	rm -rf _build build .pytest_cache
