# Two commands on a fresh machine: `make demo` (the main job on the synthetic default) and
# `make test`. Both install into .venv on first use; the stamp re-installs when pyproject changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NASCLI := $(BIN)/nascli
DEMO := demo
SEED ?= 0
DEMO_EPOCHS ?= 16
# CPU-sized baseline: a 2-conv head tower (FCOS: 4) and a higher peak rate for the short schedule.
DEMO_TRAIN := --num-convs 2 --lr 0.02

.PHONY: install demo test bench bench-search bccd bccd-nas-fcos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DEMO_TRIALS ?= 20
# synth -> split -> train baseline -> eval -> cache features -> NAS-FCOS search -> top-k.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(NASCLI) data synth --out $(DEMO)/synth --images 300 --size 256 --seed $(SEED)
	$(NASCLI) data split $(DEMO)/synth/instances.json --train $(DEMO)/train.json --val $(DEMO)/val.json --val-size 60 --seed $(SEED)
	$(NASCLI) data stats $(DEMO)/train.json
	$(NASCLI) train --data $(DEMO)/train.json --out $(DEMO)/baseline --epochs $(DEMO_EPOCHS) $(DEMO_TRAIN) --seed $(SEED)
	$(NASCLI) eval $(DEMO)/baseline/last.pt --data $(DEMO)/val.json
	$(NASCLI) cache-features --data $(DEMO)/train.json --val $(DEMO)/val.json --checkpoint $(DEMO)/baseline/last.pt --levels c3,c4,c5 --out $(DEMO)/cache --seed $(SEED)
	$(NASCLI) search --method nas-fcos --proxy nas-fcos-demo --cache $$(ls $(DEMO)/cache/*.h5 | head -1) --trials $(DEMO_TRIALS) --run $(DEMO)/runs/nas-fcos --seed $(SEED)
	$(NASCLI) runs show $(DEMO)/runs/nas-fcos --top 5

test: $(STAMP)
	$(BIN)/python -m pytest

# The benchmarks compare against optional references (faster-coco-eval): installed on first use.
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks

# nas-fcos vs random on the demo's cache (run `make demo` first).
SEARCH_TRIALS ?= 40
bench-search: $(STAMP)
	$(BIN)/python -m benchmarks.bench_search --cache $$(ls $(DEMO)/cache/*.h5 | head -1) --trials $(SEARCH_TRIALS) --seed $(SEED)

# The BCCD measurement in the README: VOC train -> COCO, train, evaluate on VOC test.
BCCD ?= ../shared/datasets/bccd/BCCD
bccd: $(STAMP)
	$(NASCLI) data convert-voc $(BCCD) --split train --out bccd/train.json
	$(NASCLI) data convert-voc $(BCCD) --split test --out bccd/test.json
	$(NASCLI) train --data bccd/train.json --out bccd/baseline --min-size 256 --epochs 24 $(DEMO_TRAIN) --seed $(SEED)
	$(NASCLI) eval bccd/baseline/last.pt --data bccd/test.json

# The README's BCCD search -> retrain -> compare (after `make bccd`): NAS-FCOS decoders searched on
# a meta-train/meta-val split of BCCD train, the top 3 and the FPN baseline retrained on all of
# train from the baseline's backbone, evaluated on BCCD test.
BCCD_TRIALS ?= 40
BCCD_TOP ?= 3
BCCD_RETRAIN_EPOCHS ?= 12
bccd-nas-fcos: $(STAMP)
	$(NASCLI) data split bccd/train.json --train bccd/meta-train.json --val bccd/meta-val.json --val-size 0.3 --seed $(SEED)
	$(NASCLI) cache-features --data bccd/meta-train.json --val bccd/meta-val.json --checkpoint bccd/baseline/last.pt --levels c3,c4,c5 --out bccd/cache --seed $(SEED)
	$(NASCLI) search --method nas-fcos --proxy nas-fcos-demo --cache $$(ls bccd/cache/*.h5 | head -1) --trials $(BCCD_TRIALS) --run bccd/runs/nas-fcos --seed $(SEED)
	$(NASCLI) retrain bccd/runs/nas-fcos --top $(BCCD_TOP) --epochs $(BCCD_RETRAIN_EPOCHS) --val bccd/test.json
	$(NASCLI) compare bccd/runs/nas-fcos

clean:
	rm -rf $(DEMO) bccd .pytest_cache
