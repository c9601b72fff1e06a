# Everything a fresh machine needs, from the project's own files.
#   make demo   - set up and run the end-to-end demo
#   make test   - set up and run lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest reliability drift system-deps ohif venv phantom loso bundle evaluate-demo clean

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

# Drift with real processes at full size (issue 15): 30 studies from the training site raise
# no alarm, 30 from another scanner raise OnfhInputDrift (50-hip window); prints the drift
# score over time of both runs. `make test` runs it with 6 + 6 studies.
drift: $(STAMP) system-deps
	RELIABILITY_SCALE=full $(BIN)/pytest tests/test_drift_service.py -s -p no:cacheprovider

# The multi-site phantom the demo bundle is trained on: four scanner profiles (40 patients
# each; see `onfh-dlr phantom --list-sites`) and 40 patients of the original phantom.
SITES := siemens-1.5t,ge-3t,philips-3t,canon-stir-1.5t
phantom: data/sites-160/cohort.csv data/legacy-40/cohort.csv

data/sites-160/cohort.csv: | $(STAMP)
	$(BIN)/onfh-dlr phantom data/sites-160 --cases 160 --seed 2025 --site $(SITES) --workers 2

data/legacy-40/cohort.csv: | $(STAMP)
	$(BIN)/onfh-dlr phantom data/legacy-40 --cases 40 --seed 2026 --workers 2

# Leave-one-site-out: the training recipe trained on three sites and scored on the fourth
# with auto-ROI, for each site (33 min on 2 cores on 2026-12-07; the feature cache is shared).
data/loso/leave_one_site_out.json: data/sites-160/cohort.csv | $(STAMP)
	$(BIN)/python bench/leave_one_site_out.py data/sites-160/cohort.csv --work data/loso \
		--cache data/cache --workers 2

loso: data/loso/leave_one_site_out.json

# The demo bundle: the same recipe on all 200 phantom patients, its report showing the
# leave-one-site-out table (15 min more on 2 cores once the cache is warm).
bundle: $(STAMP) phantom data/loso/leave_one_site_out.json
	rm -rf model_bundle/demo
	$(BIN)/onfh-dlr train data/sites-160/cohort.csv data/legacy-40/cohort.csv \
		--out model_bundle/demo --cache data/cache --workers 2 --synthetic \
		--site-validation data/loso/leave_one_site_out.json --name onfh-dlr-demo --version 2.2.0

# The demo bundle on 100 fresh phantom patients from another seed, auto-segmented.
data/phantom-eval/cohort.csv: | $(STAMP)
	$(BIN)/onfh-dlr phantom data/phantom-eval --cases 100 --seed 7 --workers 2

evaluate-demo: $(STAMP) data/phantom-eval/cohort.csv
	$(BIN)/onfh-dlr evaluate model_bundle/demo data/phantom-eval/cohort.csv --out data/eval-demo \
		--auto-roi --workers 2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
