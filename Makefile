# Two commands: `make demo` and `make test`. Both create .venv when missing and install the project (idempotent).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   := torch==2.14.1 torchvision==0.29.1
SPACE   ?= search_spaces/cbgan.yaml
RESULTS ?= results

STUDY_SPACES ?= search_spaces/cgan.yaml search_spaces/cbgan.yaml search_spaces/softlabel.yaml

.PHONY: install demo test study mlflow-ui clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install only when the project metadata changes; torch is pinned to the pair that installs from local files.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m trainables.tune --space $(SPACE) --results $(RESULTS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# Three methods at equal cost on digits-LT (docs/sweeps.md, "Studies"); report in $(RESULTS)/study/report/report.md
study: $(STAMP)
	$(BIN)/python -m trainables.study --spaces $(STUDY_SPACES) --max-steps 600 --budget-steps 3000 --confirm 2:3 \
		--results $(RESULTS)

mlflow-ui: $(STAMP)
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (the Model training view; each sweep prints its experiment's link)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(RESULTS)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(RESULTS) .pytest_cache
