# Two commands do all the set-up on a fresh machine:
#   make plan   -- the main job: a real deployment plan on a default fleet
#   make test   -- lint + the test suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned: the CPU wheel of 2.13.0 lies on the build machines; an unpinned torch
# would pull a multi-GB CUDA build.
EXTRAS ?= dev,validate,service,ray

.PHONY: plan test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

# A synthetic workload with the Azure conversation trace's mean lengths: needs no data files.
plan: $(STAMP)
	$(BIN)/serveplan plan --model llama-3.1-70b --gpu h100:16 --workload lognormal:1155,211 \
	  --rate 8 --ttft-slo 1.0 --tpot-slo 0.05 --explain

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
