# fusionlab — `make help` lists every target.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PIPELINE ?= stages/pipeline.yaml
ARGS     ?=
# Offline by default (the demo needs no downloads); `make pipeline HF_HUB_OFFLINE=0` allows hub downloads.
export HF_HUB_OFFLINE ?= 1
export YOLO_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
# pip's notes about this machine's local package mirror are noise; keep errors visible.
PIP_QUIET := 2>&1 | grep -v -e "^WARNING: Location" -e "^\s*$$" || true

.PHONY: help setup lock demo pipeline data stage-1 stage-2 stage-3 stage-4 stage-5 ship-model ablate test test-full lint bench report clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PIPELINE=$(PIPELINE)  ARGS='key=value ...' (overrides passed to fusionlab run)"

$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing fusionlab with the exact versions of constraints.txt into $(VENV) (a few minutes the first time)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' $(PIP_QUIET)
	@$(BIN)/python -c "import fusionlab, torch, lightning, ultralytics, open_clip, diffusers, cv2" || \
		{ echo "installation failed: see the pip output above"; exit 1; }
	@touch $@

setup: $(VENV)/.installed ## create .venv and install fusionlab with the locked versions (constraints.txt)

lock: ## re-resolve pyproject.toml's ranges in a scratch venv and write the result to constraints.txt
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check '.[dev]' $(PIP_QUIET)
	{ echo "# Exact versions CI and the demo install (\`make setup\` passes this file to pip as constraints)."; \
	  echo "# pyproject.toml keeps compatible ranges; regenerate this file with \`make lock\`."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v -i -e '^fusionlab' -e '^#'; } > constraints.txt
	rm -rf .venv-lock

demo: setup ## run the embedded default pipeline (synthetic scenes, CPU, all five stages); ends by printing the report path
	$(BIN)/fusionlab run $(PIPELINE) $(ARGS)

pipeline: setup ## run PIPELINE (default stages/pipeline.yaml) with ARGS overrides
	$(BIN)/fusionlab run $(PIPELINE) $(ARGS)

data: setup ## generate the synthetic scenes of PIPELINE into its run dir
	$(BIN)/fusionlab run $(PIPELINE) --only scenes $(ARGS)

stage-1: setup ## stage 1 of PIPELINE: depth estimators (IR and VIS)
	$(BIN)/fusionlab run $(PIPELINE) --only depth $(ARGS)

stage-2: setup ## stage 2 of PIPELINE: DDPM multi-channel denoiser
	$(BIN)/fusionlab run $(PIPELINE) --only denoiser $(ARGS)

stage-3: setup ## stage 3 of PIPELINE: depth-informed captions and the CLIP embedding cache
	$(BIN)/fusionlab run $(PIPELINE) --only captions $(ARGS)

stage-4: setup ## stage 4 of PIPELINE: fusion training, fused eval images and metrics
	$(BIN)/fusionlab run $(PIPELINE) --only fusion $(ARGS)

stage-5: setup ## stage 5 of PIPELINE: bilevel fusion + YOLO detection
	$(BIN)/fusionlab run $(PIPELINE) --only detect $(ARGS)

SHIP_NAME ?= baseline_roadscene
SHIP_RUN  ?= runs/roadscene
# width 8: a quarter of the preset's compute at the same RoadScene quality (docs/results.md), so fuse keeps up with a camera
SHIP_ARGS ?= fusion.model.width=8 cpu_threads=1
ship-model: setup ## train the shipped default model (baseline on RoadScene train, stages/roadscene.yaml) and copy it into fusionlab/shipped/
	nice $(BIN)/fusionlab run stages/roadscene.yaml run_dir=$(SHIP_RUN) $(SHIP_ARGS) $(ARGS)
	$(BIN)/fusionlab models ship $(SHIP_RUN)/fusion --name $(SHIP_NAME) \
		--command "fusionlab run stages/roadscene.yaml run_dir=$(SHIP_RUN) $(SHIP_ARGS) $(ARGS)"

ABLATE      ?= stages/ablate.yaml
ABLATE_RUN  ?= runs/demo
ABLATE_ARGS := --seeds 3 $(ARGS)
ablate: setup ## the papers' ablations on synthetic scenes, 3 seeds each (ldnf text x depth, text2pixels text x codebook, stage-5 modes); tables in ABLATE_RUN/ablations/, linked from its report
	$(BIN)/fusionlab ablate $(ABLATE) --name ldnf --stages fusion --out $(ABLATE_RUN)/ablations/ldnf \
		--grid fusion.text_guidance=on,off fusion.depth_loss=on,off $(ABLATE_ARGS)
	$(BIN)/fusionlab ablate $(ABLATE) --name text2pixels --stages fusion --out $(ABLATE_RUN)/ablations/text2pixels \
		--grid fusion.preset=text2pixels fusion.text_guidance=on,off fusion.model.codebook=true,false $(ABLATE_ARGS)
	$(BIN)/fusionlab ablate $(ABLATE) --name detect-modes --stages detect --out $(ABLATE_RUN)/ablations/detect-modes \
		--grid detect.mode=bilevel,joint,alternating $(ABLATE_ARGS)

report: setup ## rebuild the report of PIPELINE's run dir
	$(BIN)/fusionlab report $$($(BIN)/python -c "import sys; from fusionlab.pipeline.spec import load_pipeline; print(load_pipeline(sys.argv[1], sys.argv[2:])[0].run_dir)" $(PIPELINE) $(ARGS))

test: setup ## run the fast test suite (what CI runs)
	$(BIN)/python -m pytest -m "not slow" -q $(ARGS) || { code=$$?; [ $$code -eq 5 ] && echo "no tests collected" || exit $$code; }

test-full: setup ## run every test, slow ones included (installs headless chromium for the report test)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the report screenshot test will skip"; }
	$(BIN)/python -m pytest -q $(ARGS) || { code=$$?; [ $$code -eq 5 ] && echo "no tests collected" || exit $$code; }

lint: setup ## ruff over the package and the tests
	$(BIN)/ruff check fusionlab tests benchmarks

bench: setup ## speed benchmarks on this machine: metrics ms/pair, fuse pairs/s with the shipped model (with the load average)
	@for b in benchmarks/bench_*.py; do echo "== $$b (load average: $$(cut -d' ' -f1-3 /proc/loadavg))"; $(BIN)/python $$b; done

clean: ## remove run dirs and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache test-artifacts
