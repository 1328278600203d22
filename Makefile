# The two commands a newcomer needs (see README): `make book` and `make test`.
# Both create .venv from pyproject.toml and unpack the offline CIFAR packs when ../shared/data exists.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
SHARED  ?= ../shared/data
STAMP   := $(VENV)/.installed

.PHONY: book test data install clean-book

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[book,test,cluster]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nbgraft)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Offline packs beside the checkout -> data/<name>.npz; online machines may skip this (torchvision downloads).
data: $(STAMP)
	@if [ -f $(SHARED)/unpack.py ]; then $(BIN)/python $(SHARED)/unpack.py data; \
	 else echo "no $(SHARED): nbgraft will use a torchvision root in data/ or download CIFAR"; fi

book: data
	$(BIN)/python -m nbgraft book --profile $(PROFILE)

test: data
	$(BIN)/python -m pytest

clean-book:
	rm -rf _build outputs/notebooks
