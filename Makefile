# Everything a fresh machine needs, from the project's own files.
#   make demo   - set up and run the end-to-end demo
#   make test   - set up and run lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest reliability system-deps ohif venv phantom bundle evaluate-demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

# The OHIF Viewer build (the npm package ships it in dist/) for tests/test_viewer_ohif.py,
# pinned, fetched once with npm into the gitignored .cache/.
OHIF_VERSION := 3.13.2
OHIF_DIR := .cache/ohif/$(OHIF_VERSION)

ohif: $(OHIF_DIR)/package/dist/index.html

$(OHIF_DIR)/package/dist/index.html: | system-deps
	rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack --silent @ohif/app@$(OHIF_VERSION) && tar xzf ohif-app-$(OHIF_VERSION).tgz
	touch $@

demo: $(STAMP)
	$(BIN)/onfh-dlr demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps ohif
	$(BIN)/pytest -m "not slow"

test: lint typecheck pytest

# The reliability suite at full size (20 worker kills, 10,000 fuzz cases, a 60 s broker
# and a 5 min destination outage); `make test` runs it reduced.
reliability: $(STAMP) system-deps
	RELIABILITY_SCALE=full $(BIN)/pytest tests/reliability -s -p no:cacheprovider

# A phantom cohort like the source paper's (80 healthy, 70 ONFH patients).
phantom: data/phantom-150/cohort.csv

# The demo bundle: trained on a 150-patient phantom cohort (about an hour on 2 cores).
data/phantom-150/cohort.csv: | $(STAMP)
	$(BIN)/onfh-dlr phantom data/phantom-150 --cases 150 --seed 2024 --workers 2

bundle: $(STAMP) data/phantom-150/cohort.csv
	rm -rf model_bundle/demo
	$(BIN)/onfh-dlr train data/phantom-150/cohort.csv --out model_bundle/demo --cache data/cache \
		--workers 2 --synthetic --name onfh-dlr-demo --version 1.0.0

# The demo bundle on 100 fresh phantom patients from another seed, auto-segmented.
data/phantom-eval/cohort.csv: | $(STAMP)
	$(BIN)/onfh-dlr phantom data/phantom-eval --cases 100 --seed 7 --workers 2

evaluate-demo: $(STAMP) data/phantom-eval/cohort.csv
	$(BIN)/onfh-dlr evaluate model_bundle/demo data/phantom-eval/cohort.csv --out data/eval-demo \
		--auto-roi --workers 2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
