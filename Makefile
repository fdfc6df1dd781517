# Two commands on a fresh machine: `make demo` (the main job on the synthetic default) and
# `make test`. Both install into .venv on first use; the stamp re-installs when pyproject changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NASCLI := $(BIN)/nascli
DEMO := pipelines/nas-fcos
SEED ?= 0
# CPU-sized baseline: a 2-conv head tower (FCOS: 4). The synthetic pipelines train it with the recipe
# `train --lr-grid default,0.02` chose on meta-val, AdamW at 8e-4 (meta-val AP 9.2 against SGD 0.02's
# 3.4, test 9.9 against 3.9: benchmarks/baseline-recipe-synthetic.json). Synthetic numbers measured
# before that (benchmarks/README.md says which) reproduce with DEMO_TRAIN="--num-convs 2 --lr 0.02".
# BCCD keeps SGD at 0.02, the recipe its README numbers were made with; its grid chose AdamW 1.6e-3
# (BCCD_LAT_TRAIN below, test AP 45.6 against 35.1: benchmarks/baseline-recipe-bccd.json).
DEMO_TRAIN ?= --num-convs 2 --optimizer adamw --lr 8e-4
BCCD_TRAIN ?= --num-convs 2 --lr 0.02
# What `train --lr-grid default,0.02` chose on BCCD's meta-val: test AP 45.6 against SGD 0.02's 35.1
# (benchmarks/baseline-recipe-bccd.json); the BCCD latency run's baseline.
BCCD_LAT_TRAIN ?= --num-convs 2 --optimizer adamw --lr 1.6e-3

.PHONY: help install demo demo-full methods bench-nas-fpn-proxy test bench bench-init bench-search bench-search-retrain bench-proxy bench-auto-fpn fidelity bccd bccd-nas-fcos bccd-fidelity bccd-headline bccd-sgd bccd-latency-baseline bccd-latency-search bccd-latency-promote bench-latency-space bench-latency-space-demo bench-skip-feedback bench-inference methods-row methods-table sp-nas-demo bench-detnas bench-supernet bench-executors bench-trial bench-trial-faithful bench-gpu bench-latency bench-check bench-baseline-recipe fidelity-baselines clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

help:
	@echo "set-up:      make demo (the NAS-FCOS pipeline on synthetic data, ~6 min) | make test | make install"
	@echo "pipelines:   make pipeline-METHOD (nas-fcos, nas-fpn, random; knobs PIPE_*) | make demo-full (~43 min)"
	@echo "             make bccd, then make bccd-nas-fcos | make sp-nas-demo (after demo)"
	@echo "benchmarks:  make bench (kernels, cache, AP vs the references) | bench-search | bench-search-retrain"
	@echo "             (both with SEARCH_TARGET=1.0x SEARCH_PROXY=nas-fcos-cpu: under the control's latency) | bench-latency-space-demo"
	@echo "             bench-proxy | bench-init | bench-auto-fpn | bench-detnas | bench-supernet | bench-executors"
	@echo "             bench-nas-fpn-proxy (NAS-FPN proxy designs: which separates candidates)"
	@echo "             bench-trial (trials per CPU-hour, before and after; run it alone) | bench-trial-faithful (~15 min)"
	@echo "             bench-latency (per-op latency table: predicted vs measured, ~20 min; run it alone) | bench-gpu (CUDA only) | bench-check (check on 2,000 photos) | bench-baseline-recipe DATASET=synthetic|bccd"
	@echo "experiments: make fidelity | make bccd-fidelity (hours; resumable)"
	@echo "             make methods (every method on one budget, one table; METHODS_DATA=bccd METHODS_BUDGET_MIN=30)"
	@echo "             a bench whose cache is missing says which target to run first; tables: benchmarks/README.md"

# A pipeline per method on the synthetic default, with honest splits: a test split is held out
# first; the rest is split into meta-train (the baseline trains on it, then the search's
# candidates) and meta-val (the search scores on it; the baseline never saw it); the promoted
# decoders and the control are promoted alike (each keeps its best rate of the grid by meta-val
# AP, then trains with PIPE_SEEDS seeds) and evaluated on the test split alone. Sized so that
# `make demo` (= pipeline-nas-fcos) ends inside 8 minutes on 2 CPU cores (shrunk for that: 400
# images of 96 px, a 10-epoch baseline, 3 trials, 2 retraining epochs, a grid of 2 AdamW rates of
# 1 epoch - the two the demo's arms chose on meta-val from the default grid - and 2 seeds); raise the
# knobs for a real run, e.g. `make pipeline-nas-fpn PIPE_IMAGES=1000 PIPE_TRIALS=200 PIPE_TOP=3`.
PIPE_IMAGES ?= 400
PIPE_TEST ?= 80
PIPE_VAL ?= 60
PIPE_SIZE ?= 96
PIPE_EPOCHS ?= 10
PIPE_TRIALS ?= 3
PIPE_TOP ?= 1
PIPE_RETRAIN_EPOCHS ?= 2
PIPE_GRID ?= adamw:8e-4,adamw:1.6e-3
PIPE_GRID_EPOCHS ?= 1
PIPE_SEEDS ?= 2
# doublings of a rate an architecture chose at its optimiser's edge (retrain --extend-grid)
PIPE_EXTEND ?= 0
# trials side by side in one-thread processes (`search --workers`): with the trial's CPU paths,
# 3.3x the evaluations an hour of the old one trial on both cores (benchmarks/trial.json; the
# workers alone about 1.7x)
PIPE_WORKERS ?= 2
# One variable per cache: the .h5 file a cache folder holds, found when the recipe runs (so a
# cache built earlier in the same recipe is found). `require_cache` stops a target whose cache is
# missing with one line that says what to run first.
cache_in = $$(ls $(1)/*.h5 2>/dev/null | head -1)
DEMO_CACHE = $(call cache_in,$(DEMO)/cache)
SPNAS_CACHE = $(call cache_in,$(SPNAS)/cache)
BCCD_CACHE = $(call cache_in,bccd/cache)
require_cache = @test -n "$(call cache_in,$(1))" || { echo "make $@: no cache in $(1); run make $(2) first"; exit 2; }
PROXY_nas-fcos := nas-fcos-demo
PROXY_nas-fpn := nas-fpn
PROXY_random := nas-fcos-demo
# Fair promotion everywhere else: retrain's default grid (SGD at FCOS's rate per image, AdamW at
# three rates) chosen on meta-val, extended by doubling where an architecture's best is its
# optimiser's largest rate (at most twice: on BCCD the searched decoders chose the largest AdamW
# rate twice in a row), three seeds of the full schedule on test.
PROMOTE_SEEDS ?= 3
PROMOTE_EXTEND ?= 2
PROMOTE := --seeds $(PROMOTE_SEEDS) --extend-grid $(PROMOTE_EXTEND)

pipeline-%: $(STAMP)
	rm -rf pipelines/$*
	$(NASCLI) data synth --out pipelines/$*/synth --images $(PIPE_IMAGES) --size $(PIPE_SIZE) --seed $(SEED)
	$(NASCLI) data split pipelines/$*/synth/instances.json --train pipelines/$*/trainval.json --val pipelines/$*/test.json --val-size $(PIPE_TEST) --seed $(SEED)
	$(NASCLI) data split pipelines/$*/trainval.json --train pipelines/$*/meta-train.json --val pipelines/$*/meta-val.json --val-size $(PIPE_VAL) --seed $(SEED)
	$(NASCLI) data stats pipelines/$*/meta-train.json
	$(NASCLI) train --data pipelines/$*/meta-train.json --out pipelines/$*/baseline --epochs $(PIPE_EPOCHS) --min-size $(PIPE_SIZE) $(DEMO_TRAIN) --val pipelines/$*/meta-val.json --seed $(SEED)
	$(NASCLI) eval pipelines/$*/baseline/last.pt --data pipelines/$*/test.json
	$(NASCLI) cache-features --data pipelines/$*/meta-train.json --val pipelines/$*/meta-val.json --checkpoint pipelines/$*/baseline/last.pt --levels c3,c4,c5 --crop $(PIPE_SIZE) --out pipelines/$*/cache --seed $(SEED)
	$(NASCLI) search --method $* --proxy $(or $(PROXY_$*),$*) --cache $(call cache_in,pipelines/$*/cache) --trials $(PIPE_TRIALS) --run pipelines/$*/run --seed $(SEED) --workers $(PIPE_WORKERS)
	$(NASCLI) retrain pipelines/$*/run --top $(PIPE_TOP) --epochs $(PIPE_RETRAIN_EPOCHS) $(if $(PIPE_GRID),--lr-grid $(PIPE_GRID)) --grid-epochs $(PIPE_GRID_EPOCHS) --seeds $(PIPE_SEEDS) --extend-grid $(PIPE_EXTEND) --val pipelines/$*/test.json
	$(NASCLI) compare pipelines/$*/run
	$(NASCLI) report pipelines/$*/run --out pipelines/$*/report.html

# The main job on the built-in default: the NAS-FCOS pipeline, ending with the compare table.
demo: pipeline-nas-fcos

# The demo at the earlier default's size (README "the demo at full size": 660 images of 128 px,
# 12-epoch baseline, 4 trials) promoted as everywhere else: retrain's default grid (SGD and AdamW
# points) for 2 epochs on meta-val, extended where an architecture chose its optimiser's edge, 3
# seeds of 6 epochs on test; latency re-timed interleaved under torch and ONNX Runtime; summarised
# with its wall time into benchmarks/demo-full.json.
demo-full: $(STAMP)
	start=$$(date +%s) && $(MAKE) pipeline-nas-fcos PIPE_IMAGES=660 PIPE_SIZE=128 PIPE_EPOCHS=12 PIPE_TRIALS=4 \
	  PIPE_RETRAIN_EPOCHS=6 PIPE_GRID= PIPE_GRID_EPOCHS=2 PIPE_SEEDS=$(PROMOTE_SEEDS) PIPE_EXTEND=$(PROMOTE_EXTEND) && \
	$(BIN)/python -m benchmarks.bench_promotion --run $(DEMO)/run --latency-images 50 --runtimes torch,onnxruntime \
	  --wall-seconds $$(( $$(date +%s) - start )) --out benchmarks/demo-full.json

# Two workers, one torch and numba thread each (tests/conftest.py; OMP/NUMBA for the subprocesses the tests start):
# the suite is mostly single-threaded work, so this halves its wall time on 2 cores. A file's
# tests stay on one worker (module fixtures such as the Ray cluster start once).
test: $(STAMP)
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile

# The benchmarks compare against optional references (faster-coco-eval): installed on first use.
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks

# nas-fcos vs random on the demo's cache (run `make demo` first). SEARCH_SEED=S (S > 0) runs
# another search seed into benchmarks/runs/search-seedS and benchmarks/search-seedS.json.
# SEARCH_TARGET=1.0x searches both under the control's latency (issue 42; SEARCH_PROXY=nas-fcos-cpu:
# the demo space's 5-block depthwise head cannot reach it on BCCD) into search-latency[-seedS].json.
SEARCH_TRIALS ?= 60
SEARCH_SEED ?= $(SEED)
SEARCH_TARGET ?=
SEARCH_PROXY ?= nas-fcos-demo
SEARCH_TAG := $(if $(filter 0,$(SEARCH_SEED)),search,search-seed$(SEARCH_SEED))
SEARCH_TAG := $(if $(SEARCH_TARGET),$(subst search,search-latency,$(SEARCH_TAG)),$(SEARCH_TAG))
bench-search: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_search --cache $(DEMO_CACHE) --trials $(SEARCH_TRIALS) --seed $(SEARCH_SEED) \
	  --proxy $(SEARCH_PROXY) $(if $(SEARCH_TARGET),--latency-target $(SEARCH_TARGET)) \
	  --runs benchmarks/runs/$(SEARCH_TAG) --out benchmarks/$(SEARCH_TAG).json

# Whether bench-search's proxy wins survive a fair promotion: the controller's best, random's best
# and the control promoted alike (grid on meta-val, SEARCH_RETRAIN_SEEDS seeds of
# SEARCH_RETRAIN_EPOCHS on the test split), each re-timed with the control, interleaved, under torch
# and ONNX Runtime. The two bests are fixed once in a committed ledger (named trial-N and rank1_trialM,
# as retrain and export name a search's trials) and every finished row is kept there: a rerun on
# another machine takes the rows its inputs match instead of training them; resumable.
SEARCH_RUNS := benchmarks/runs/$(SEARCH_TAG)
SEARCH_LEDGER := benchmarks/ledgers/$(SEARCH_TAG)
SEARCH_RETRAIN_SEEDS ?= 3
SEARCH_RETRAIN_EPOCHS ?= 6
SEARCH_TIMED_IMAGES ?= 50
bench-search-retrain: $(STAMP)
	test -d $(SEARCH_LEDGER)/genotypes || { \
	  test -f $(SEARCH_RUNS)/nas-fcos/run.db || { echo "make $@: no search in $(SEARCH_RUNS); run make bench-search first"; exit 2; }; \
	  $(NASCLI) export $(SEARCH_RUNS)/nas-fcos --top 1 --out $(SEARCH_RUNS)/nas-fcos/export || exit 2; \
	  mkdir -p $(SEARCH_LEDGER)/genotypes; f=$$(ls $(SEARCH_RUNS)/nas-fcos/export/rank1_trial*.json); \
	  cp $$f $(SEARCH_LEDGER)/genotypes/trial-$$(basename $$f .json | sed 's/rank1_trial//').json; \
	  { $(NASCLI) export $(SEARCH_RUNS)/random --top 1 --out $(SEARCH_RUNS)/random/export \
	    && cp $(SEARCH_RUNS)/random/export/rank1_trial*.json $(SEARCH_LEDGER)/genotypes/; } \
	  || echo "random's search trained nothing to promote (under a latency target it may find nothing within it)"; }
	@# the search ran on make demo's data: a demo folder of another size (make demo-full) is made again
	test -f $(DEMO)/baseline/last.pt && test "$$($(BIN)/python -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["images"]))' \
	  $(DEMO)/synth/instances.json)" = "$(PIPE_IMAGES)" || $(MAKE) demo
	$(NASCLI) retrain $(SEARCH_RUNS)/promotion $$(ls $(SEARCH_LEDGER)/genotypes/*.json | sed 's/^/--arch /') --top 0 \
	  --checkpoint $(DEMO)/baseline/last.pt --select-val $(DEMO)/meta-val.json --val $(DEMO)/test.json \
	  --epochs $(SEARCH_RETRAIN_EPOCHS) --seeds $(SEARCH_RETRAIN_SEEDS) --extend-grid $(PROMOTE_EXTEND) --ledger $(SEARCH_LEDGER)
	$(BIN)/python -m benchmarks.bench_search_retrain --run $(SEARCH_RUNS)/promotion --latency-images $(SEARCH_TIMED_IMAGES) \
	  --runtimes torch,onnxruntime $(if $(SEARCH_TARGET),--latency-target $(SEARCH_TARGET)) --out benchmarks/$(SEARCH_TAG)-retrain.json

# The BCCD measurement in the README: VOC train -> COCO, split into meta-train / meta-val, the
# baseline trained on meta-train only (so the search's meta-val stays unseen), evaluated on VOC test.
BCCD ?= ../shared/datasets/bccd/BCCD
bccd: $(STAMP)
	$(NASCLI) data convert-voc $(BCCD) --split train --out bccd/train.json
	$(NASCLI) data convert-voc $(BCCD) --split test --out bccd/test.json
	$(NASCLI) data split bccd/train.json --train bccd/meta-train.json --val bccd/meta-val.json --val-size 0.3 --seed $(SEED)
	$(NASCLI) train --data bccd/meta-train.json --out bccd/baseline --min-size 256 --epochs 24 $(BCCD_TRAIN) --val bccd/meta-val.json --seed $(SEED)
	$(NASCLI) eval bccd/baseline/last.pt --data bccd/test.json

# The README's BCCD search -> retrain -> compare (after `make bccd`): NAS-FCOS decoders searched on
# meta-val with the meta-train baseline's features, the top 3 and the control retrained from the
# baseline's backbone, evaluated on BCCD test (never seen by the baseline or the search).
BCCD_TRIALS ?= 40
BCCD_TOP ?= 3
BCCD_RETRAIN_EPOCHS ?= 12
bccd-nas-fcos: $(STAMP)
	test -f bccd/baseline/last.pt || $(MAKE) bccd
	$(NASCLI) cache-features --data bccd/meta-train.json --val bccd/meta-val.json --checkpoint bccd/baseline/last.pt --levels c3,c4,c5 --out bccd/cache --seed $(SEED)
	$(NASCLI) search --method nas-fcos --proxy nas-fcos-demo --cache $(BCCD_CACHE) --trials $(BCCD_TRIALS) --run bccd/runs/nas-fcos --seed $(SEED)
	$(NASCLI) retrain bccd/runs/nas-fcos --top $(BCCD_TOP) --epochs $(BCCD_RETRAIN_EPOCHS) $(PROMOTE) --val bccd/test.json
	$(NASCLI) compare bccd/runs/nas-fcos

# Proxy fidelity on BCCD (README; after `make bccd`): cache the meta-train baseline, search on
# meta-val, then the fidelity benchmark's control, best 3 and 6 random genotypes retrained on
# meta-train and evaluated on BCCD test. About 2 hours on 2 cores; resumable like `make fidelity`.
BCCD_FIDELITY_TRIALS ?= 20
BCCD_FIDELITY_EPOCHS ?= 8
# the promotion grid of the fidelity table, e.g. 0.005,0.01,0.02,adamw:2e-4,adamw:4e-4,adamw:8e-4
BCCD_GRID ?=
# the 6 random architectures' grid (default: BCCD_GRID) and retraining seeds (the control and the
# best 3 have PROMOTE_SEEDS); BCCD_FIDELITY_TAG=-x writes bccd-promotion-x.json, fidelity-bccd-x.json
BCCD_FIDELITY_GRID ?= $(BCCD_GRID)
BCCD_FIDELITY_SEEDS ?= 2
# (the default tag writes jsons no README claim cites; the two below write the cited ones)
BCCD_FIDELITY_TAG ?= -default
bccd-fidelity: $(STAMP)
	test -f bccd/baseline/last.pt || $(MAKE) bccd
	test -n "$(BCCD_CACHE)" || $(NASCLI) cache-features --data bccd/meta-train.json --val bccd/meta-val.json --checkpoint bccd/baseline/last.pt --levels c3,c4,c5 --out bccd/cache --seed $(SEED)
	$(NASCLI) search --method nas-fcos --proxy nas-fcos-demo --cache $(BCCD_CACHE) --trials $(BCCD_FIDELITY_TRIALS) --run bccd/runs/fidelity --seed $(SEED) $$(test -f bccd/runs/fidelity/run.db && echo --resume bccd/runs/fidelity)
	$(NASCLI) retrain bccd/runs/fidelity --top 3 --epochs $(BCCD_FIDELITY_EPOCHS) $(PROMOTE) $(if $(BCCD_GRID),--lr-grid $(BCCD_GRID)) --val bccd/test.json
	$(BIN)/python -m benchmarks.bench_promotion --run bccd/runs/fidelity --out benchmarks/bccd-promotion$(BCCD_FIDELITY_TAG).json
	$(BIN)/python -m benchmarks.bench_fidelity --run bccd/runs/fidelity --test bccd/test.json --epochs $(BCCD_FIDELITY_EPOCHS) $(if $(BCCD_FIDELITY_GRID),--lr-grid $(BCCD_FIDELITY_GRID)) --train-seeds $(BCCD_FIDELITY_SEEDS) --seed $(SEED) --out benchmarks/fidelity-bccd$(BCCD_FIDELITY_TAG).json

# The README's BCCD numbers, each json from one command with exactly the knobs that made it
# (benchmarks/claims.py lists every number and its json). The AdamW promotion and its fidelity table
# (bccd-promotion-adamw.json, fidelity-bccd-adamw.json; the rows grew in three looks, told in
# benchmarks/README.md), and the SGD promotion before it (bccd-promotion.json, fidelity-bccd.json).
BCCD_ADAMW_GRID := 0.005,0.01,0.02,adamw:2e-4,adamw:4e-4,adamw:8e-4,adamw:1.6e-3,adamw:3.2e-3
bccd-headline: $(STAMP)
	$(MAKE) bccd-fidelity PROMOTE_EXTEND=0 BCCD_GRID=$(BCCD_ADAMW_GRID) BCCD_FIDELITY_GRID=adamw:8e-4,adamw:1.6e-3,adamw:3.2e-3 BCCD_FIDELITY_SEEDS=1 BCCD_FIDELITY_TAG=-adamw
bccd-sgd: $(STAMP)
	$(MAKE) bccd-fidelity PROMOTE_EXTEND=0 BCCD_GRID=0.005,0.01,0.02 BCCD_FIDELITY_TAG=

# Issue 42's BCCD piece: a NAS-FCOS search under the control's latency (bccd-fidelity's search: 20
# trials, C3-C5 cache of the meta-train baseline, with --latency-target 1.0x), then its best two
# promoted with the control (PROMOTE: the default grid on meta-val, 3 seeds of 8 epochs on test).
# Run folders live outside the work tree, in LAT_DIR (splits, baseline, cache, runs); every step
# resumes after a kill. The promotion outlives the machine (about 5 hours of 2 cores): its rows are
# kept in LAT_LEDGER (commit it after each session), the architectures it promotes are fixed there
# once (a rebuilt search may rank others: its latency table is timed anew), and on a new machine the
# same command rebuilds the bit-identical baseline and takes every kept row from the ledger.
LAT_DIR ?= $(HOME)/.cache/nascli/work/bccd-latency
# nas-fcos-cpu: nas-fcos-demo cannot reach 1.0x at all on BCCD (fastest of 1,000: 1.22x); with a dense
# 3x3 and a 2-block head 15 of 1,000 random decoders are predicted within it (benchmarks/latency-space-bccd-*.json)
LAT_PROXY ?= nas-fcos-cpu
LAT_RUN = $(LAT_DIR)/run-$(LAT_PROXY)
LAT_CACHE = $(call cache_in,$(LAT_DIR)/cache)
LAT_LEDGER = benchmarks/ledgers/bccd-latency-$(LAT_PROXY)
LAT_TIMED_IMAGES ?= 50
bccd-latency-baseline: $(STAMP)
	mkdir -p $(LAT_DIR)
	test -f $(LAT_DIR)/test.json || $(NASCLI) data convert-voc $(BCCD) --split test --out $(LAT_DIR)/test.json
	test -f $(LAT_DIR)/meta-val.json || { $(NASCLI) data convert-voc $(BCCD) --split train --out $(LAT_DIR)/train.json && \
	  $(NASCLI) data split $(LAT_DIR)/train.json --train $(LAT_DIR)/meta-train.json --val $(LAT_DIR)/meta-val.json --val-size 0.3 --seed $(SEED); }
	test -f $(LAT_DIR)/baseline/last.pt || $(NASCLI) train --data $(LAT_DIR)/meta-train.json --val $(LAT_DIR)/meta-val.json --out $(LAT_DIR)/baseline --min-size 256 --epochs 24 $(BCCD_LAT_TRAIN) --seed $(SEED)
bccd-latency-search: bccd-latency-baseline
	test -n "$(LAT_CACHE)" || $(NASCLI) cache-features --data $(LAT_DIR)/meta-train.json --val $(LAT_DIR)/meta-val.json --checkpoint $(LAT_DIR)/baseline/last.pt --levels c3,c4,c5 --out $(LAT_DIR)/cache --seed $(SEED)
	$(NASCLI) search --method nas-fcos --proxy $(LAT_PROXY) --cache $(LAT_CACHE) --trials $(BCCD_FIDELITY_TRIALS) --latency-target 1.0x --run $(LAT_RUN) --seed $(SEED) $$(test -f $(LAT_RUN)/run.db && echo --resume $(LAT_RUN))
	$(NASCLI) runs show $(LAT_RUN) --json > benchmarks/bccd-latency-search-$(LAT_PROXY).json
# What folding BatchNorm and channels-last buy at inference, for the BCCD latency promotion's
# architectures (benchmarks/inference.json; a few minutes, run it alone).
bench-inference: $(STAMP)
	$(BIN)/python -m benchmarks.bench_inference --run $(LAT_DIR)/promotion --images $(LAT_TIMED_IMAGES) --out benchmarks/inference.json
# Whether the space can reach the control's latency at all: 1,000 random decoders' predicted latency
# on the latency run's cache (benchmarks/latency-space-bccd-LAT_PROXY.json; ~5 min).
bench-latency-space: $(STAMP)
	$(BIN)/python -m benchmarks.bench_latency_space --cache $(LAT_CACHE) --proxy $(LAT_PROXY) --out benchmarks/latency-space-bccd-$(LAT_PROXY).json
# the same on the demo's cache (after make demo): how rare 1.0x is for bench-search SEARCH_TARGET=1.0x
bench-latency-space-demo: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_latency_space --cache $(DEMO_CACHE) --proxy nas-fcos-cpu --out benchmarks/latency-space-demo-nas-fcos-cpu.json
# What the controller should be told of a skipped candidate: both feedbacks replayed on the latency
# run's table without training (benchmarks/skip-feedback.json; ~1 h on 2 cores, run it alone).
bench-skip-feedback: $(STAMP)
	$(BIN)/python -m benchmarks.bench_skip_feedback --cache $(LAT_CACHE) --proxy $(LAT_PROXY) --asks 200 --seeds 2 --out benchmarks/skip-feedback.json
bccd-latency-promote: bccd-latency-baseline
	test -d $(LAT_LEDGER)/genotypes || { test -f $(LAT_RUN)/run.db || $(MAKE) bccd-latency-search; \
	  $(NASCLI) export $(LAT_RUN) --top 2 --out $(LAT_LEDGER)/genotypes; }
	$(NASCLI) retrain $(LAT_DIR)/promotion $$(ls $(LAT_LEDGER)/genotypes/*.json | sed 's/^/--arch /') --top 0 \
	  --checkpoint $(LAT_DIR)/baseline/last.pt --select-val $(LAT_DIR)/meta-val.json --val $(LAT_DIR)/test.json \
	  --epochs $(BCCD_FIDELITY_EPOCHS) $(PROMOTE) --ledger $(LAT_LEDGER)
	$(BIN)/python -m benchmarks.bench_promotion --run $(LAT_DIR)/promotion --latency-images $(LAT_TIMED_IMAGES) --runtimes torch,onnxruntime --latency-target 1.0x --out benchmarks/bccd-latency-promotion-$(LAT_PROXY).json

# SP-NAS on the demo's baseline (made first if missing): its meta-train / meta-val crops cached as
# images, its ResNet-18 grown by swap / expand / reignite and given a parallel level, then the
# grown backbone and the start retrained alike (from the baseline's weights, the demo's recipe) and
# compared on the test split. Resumable: rerun after a kill.
SPNAS := pipelines/sp-nas
SPNAS_TRIALS ?= 12
sp-nas-demo: $(STAMP)
	test -f $(DEMO)/baseline/last.pt || $(MAKE) demo
	$(NASCLI) cache-features --data $(DEMO)/meta-train.json --val $(DEMO)/meta-val.json --checkpoint $(DEMO)/baseline/last.pt --levels images --crop $(PIPE_SIZE) --out $(SPNAS)/cache --seed $(SEED)
	$(NASCLI) search --method sp-nas --cache $(SPNAS_CACHE) --trials $(SPNAS_TRIALS) --run $(SPNAS)/run --seed $(SEED) $$(test -f $(SPNAS)/run/run.db && echo --resume $(SPNAS)/run)
	$(NASCLI) runs show $(SPNAS)/run
	$(NASCLI) retrain $(SPNAS)/run --top 1 --epochs $(PIPE_RETRAIN_EPOCHS) $(PROMOTE) --val $(DEMO)/test.json
	$(NASCLI) compare $(SPNAS)/run

# DetNAS's Figure 2: evolution vs random sampling on one trained supernet, the same budget, on
# the demo's crops cached as images (run `make sp-nas-demo` first, or its cache-features line);
# then evolution's best and the ShuffleNetV2 control retrained alike and compared on the test
# split. About 14 minutes; resumable.
DETNAS_TRIALS ?= 40
DETNAS_RETRAIN_EPOCHS ?= 24
bench-detnas: $(STAMP)
	$(call require_cache,$(SPNAS)/cache,sp-nas-demo)
	$(BIN)/python -m benchmarks.bench_detnas --cache $(SPNAS_CACHE) --trials $(DETNAS_TRIALS) --seed $(SEED)
	$(NASCLI) retrain benchmarks/runs/detnas/evolution --top 1 --epochs $(DETNAS_RETRAIN_EPOCHS) $(PROMOTE) --val $(DEMO)/test.json
	$(NASCLI) compare benchmarks/runs/detnas/evolution

# Auto-FPN's three lambda presets on the demo's cache against the control, and the wall time of
# a NAS-FCOS search with as many trials (run `make demo` first; resumable).
AUTO_FPN_TRIALS ?= 6
# then the big preset's best and the control promoted fairly on the demo's test split
AUTO_FPN_RETRAIN_EPOCHS ?= 12
# Executors: the same random search in-process and on a loopback-only Ray cluster of this machine
# with 1 and 2 workers (root: `unshare -n`); evaluations per hour and Ray's overhead per trial.
EXECUTOR_TRIALS ?= 12
# Whether path-wise supernet training learns at our scale: DetNAS's pre-training proxy under eight
# path samplers (fixed, one random block, ..., the paper's uniform paths); about 4 minutes.
bench-supernet: $(STAMP)
	$(call require_cache,$(SPNAS)/cache,sp-nas-demo)
	$(BIN)/python -m benchmarks.bench_supernet --cache $(SPNAS_CACHE) --seed $(SEED)

bench-executors: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_executors --cache $(DEMO_CACHE) --trials $(EXECUTOR_TRIALS) --seed $(SEED)

bench-auto-fpn: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_auto_fpn --cache $(DEMO_CACHE) --trials $(AUTO_FPN_TRIALS) --seed $(SEED)
	$(NASCLI) retrain benchmarks/runs/auto-fpn/big --top 1 --epochs $(AUTO_FPN_RETRAIN_EPOCHS) $(PROMOTE) --val $(DEMO)/test.json
	$(BIN)/python -m benchmarks.bench_promotion --run benchmarks/runs/auto-fpn/big --out benchmarks/auto-fpn-promotion.json

# Trials per CPU-hour of the demo proxy before and after issue 30 (serial on every thread with the
# trial kit as it was, against --workers processes with today's), the rewards' agreement, a profile
# of one trial and this machine's conv/matmul peaks (after `make demo`; ~11 minutes; alone).
# bench-trial-faithful: the same two arms for the faithful proxy (nas-fcos.yaml) on a C2-C5 cache of
# the demo's crops, 5 sampled genotypes + the control's and the best's re-scoring (~30 minutes; alone).
bench-trial: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_trial --cache $(DEMO_CACHE) --seed $(SEED)

FAITHFUL_CACHE = $(call cache_in,$(DEMO)/cache-c2)
bench-trial-faithful: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	test -n "$(FAITHFUL_CACHE)" || $(NASCLI) cache-features --data $(DEMO)/meta-train.json --val $(DEMO)/meta-val.json --checkpoint $(DEMO)/baseline/last.pt --levels c2,c3,c4,c5 --crop $(PIPE_SIZE) --out $(DEMO)/cache-c2 --seed $(SEED)
	$(BIN)/python -m benchmarks.bench_trial --proxy nas-fcos --cache $(FAITHFUL_CACHE) --genotypes 5 --arms-only --seed $(SEED) --out benchmarks/trial-nas-fcos.json

# On a machine with CUDA: the same workload's trials per hour on cpu / cuda / cuda + amp and the
# CPU-vs-GPU agreement tests (tests/test_device.py) in one table; elsewhere it says it skipped.
bench-gpu: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_gpu --cache $(DEMO_CACHE) --seed $(SEED)

# Whether the fair head initialisation moves the proxy's ranking: the control and 6 random genotypes
# under the old and the new initialisation, 2 seeds each, on the demo's cache (run `make demo` first).
# Is the per-op latency table worth searching under? Predicted against measured end-to-end latency
# of the control and 20 random decoders per decoder space at BCCD's promoted shape, each measured
# twice (the repeat is the ceiling); about 20 minutes; run it alone (benchmarks/latency.json).
bench-latency: $(STAMP)
	$(BIN)/python -m benchmarks.bench_latency --out benchmarks/latency.json

# Is the proxy better than counting parameters? tau of the proxy and of each cost against test AP
# over the promoted architectures of the BCCD promotions (benchmarks/fidelity-baselines.json; seconds).
fidelity-baselines: $(STAMP)
	$(BIN)/python -m benchmarks.fidelity_baselines benchmarks/bccd-promotion-adamw.json benchmarks/bccd-promotion.json --out benchmarks/fidelity-baselines.json

# `nascli check` on 2,000 photos (640x480 JPEGs) against PIL decoding them on one thread: the
# first scan and the remembered second one (benchmarks/check.json, about 10 s).
bench-check: $(STAMP)
	$(BIN)/python -m benchmarks.bench_check --out benchmarks/check.json

# The baseline's recipe chosen on meta-val (`train --lr-grid default,0.02`) against SGD at 0.02, one
# seed each, both evaluated on test once (benchmarks/baseline-recipe-DATASET.json). DATASET=synthetic
# (the demo's splits, ~7 min) or bccd (~60 min). Run folders under $$NASCLI_WORK (default
# ~/.cache/nascli/work); a rerun reuses finished runs. Run it alone.
DATASET ?= synthetic
bench-baseline-recipe: $(STAMP)
	$(BIN)/python -m benchmarks.bench_baseline_recipe --dataset $(DATASET) --out benchmarks/baseline-recipe-$(DATASET).json

bench-init: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_init --cache $(DEMO_CACHE) --seed $(SEED)

# How far to trust the NAS-FCOS proxy (run `make demo` first): seed noise, tau between widths,
# and the control and 20 random genotypes before and after the proxy's correctness fixes.
bench-proxy: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_proxy --cache $(DEMO_CACHE) --seed $(SEED)

# Which method for my data (issue 28): every method searches METHODS_BUDGET_MIN wall-clock minutes on
# this machine from the same baseline, its winner and its control are promoted alike (grid on
# meta-val, METHODS_SEEDS seeds on test), one table + figure in benchmarks/methods-DATA.json/png.
# Synthetic default: 6 minutes a method, 1 h 53 measured on 2 cores (benchmarks/methods-demo.json's
# wall_minutes; 8 minutes took 2 h 06); METHODS_DATA=bccd METHODS_BUDGET_MIN=30 (after make bccd)
# for the published table. METHODS_EXECUTOR=ray runs it on a Ray cluster. Resumable.
METHODS_DATA ?= demo
METHODS_BUDGET_MIN ?= 6
METHODS_SEEDS ?= 3
METHODS_EXECUTOR ?= local
METHODS_PIPELINE_demo := $(DEMO)
METHODS_PIPELINE_bccd := bccd
methods: $(STAMP)
	test -f $(METHODS_PIPELINE_$(METHODS_DATA))/baseline/last.pt || $(MAKE) $(if $(filter bccd,$(METHODS_DATA)),bccd,demo)
	$(if $(filter bccd,$(METHODS_DATA)),$(NASCLI) cache-features --data bccd/meta-train.json --val bccd/meta-val.json --checkpoint bccd/baseline/last.pt --levels c3,c4,c5 --out bccd/cache --seed $(SEED))
	$(BIN)/python -m benchmarks.bench_methods --pipeline $(METHODS_PIPELINE_$(METHODS_DATA)) --minutes $(METHODS_BUDGET_MIN) \
	  --seeds $(METHODS_SEEDS) --executor $(METHODS_EXECUTOR) --seed $(SEED) $(foreach m,nas-fcos random,--proxy $(m)=$(PROXY_$(m))) \
	  --work benchmarks/runs/methods-$(METHODS_DATA) --out benchmarks/methods-$(METHODS_DATA).json

# The same table on BCCD, one method (a row) at a time (issue 45): its search for ROW_MINUTES on the
# BCCD latency work's baseline and cache, its winner fixed once in the ledger and promoted with the
# control like bccd-latency-promote (the default grid extended, 3 seeds of 8 epochs on test). Every
# promoted row made from that baseline is kept in one ledger, LAT_LEDGER (commit it): the control is
# trained once for every row and the latency promotion alike, each winner is fixed there
# (winners/METHOD.json), and a row cut short resumes on another machine. methods-table assembles
# benchmarks/methods-bccd/table.json (+ .png) from the rows present and marks the others.
METHOD ?= nas-fcos
ROW_MINUTES ?= 20
# ROW_TARGET=1.0x: the row's search under the control's latency (issue 45 asks for it; on BCCD only
# nas-fcos-cpu is known to reach 1.0x, benchmarks/latency-space-bccd-*.json); ROW_PROXY: its spec
ROW_TARGET ?=
ROW_PROXY ?= $(PROXY_$(METHOD))
ROWS_DIR := benchmarks/methods-bccd
methods-row: bccd-latency-baseline
	test -n "$(LAT_CACHE)" || $(NASCLI) cache-features --data $(LAT_DIR)/meta-train.json --val $(LAT_DIR)/meta-val.json --checkpoint $(LAT_DIR)/baseline/last.pt --levels c3,c4,c5 --out $(LAT_DIR)/cache --seed $(SEED)
	mkdir -p $(ROWS_DIR)
	$(BIN)/python -m benchmarks.bench_methods --pipeline $(LAT_DIR) --methods $(METHOD) --minutes $(ROW_MINUTES) \
	  --seeds 3 --epochs $(BCCD_FIDELITY_EPOCHS) --seed $(SEED) --work $(LAT_DIR)/methods --ledger $(LAT_LEDGER) \
	  --latency-images $(LAT_TIMED_IMAGES) \
	  $(if $(ROW_PROXY),--proxy $(METHOD)=$(ROW_PROXY)) $(if $(ROW_TARGET),--latency-target $(ROW_TARGET)) \
	  --out $(ROWS_DIR)/$(METHOD).json
methods-table: $(STAMP)
	$(BIN)/python -m benchmarks.bench_methods --assemble $(ROWS_DIR)

# Can NAS-FPN's proxy separate candidates on a CPU (issue 28)? The control and 6 random pyramids,
# 3 seeds each, under each proxy design of bench_reward_noise.DESIGNS; the cheapest design whose
# spread between candidates is >= 3 seed-noise widths is kept (after make demo; resumable).
bench-nas-fpn-proxy: $(STAMP)
	$(call require_cache,$(DEMO)/cache,demo)
	$(BIN)/python -m benchmarks.bench_reward_noise --cache $(DEMO_CACHE) --proxy nas-fpn --genotypes 6 --seeds 3 --study --seed $(SEED)

# Proxy fidelity on the synthetic default (README): the demo's run (made first if missing), its
# control, best 3 and 6 random genotypes, each scored by the proxy with 3 seeds and retrained with
# the demo's recipe, evaluated on the test split. Resumable: rerun after a kill.
# FIDELITY_TAG=-x writes benchmarks/fidelity-x.json (issue 30's re-run: FIDELITY_TAG=-issue30).
FIDELITY_RUN ?= $(DEMO)/run
FIDELITY_TEST ?= $(DEMO)/test.json
FIDELITY_TAG ?=
fidelity: $(STAMP)
	test -f $(FIDELITY_RUN)/run.db || test "$(FIDELITY_RUN)" != "$(DEMO)/run" || $(MAKE) demo
	$(BIN)/python -m benchmarks.bench_fidelity --run $(FIDELITY_RUN) --test $(FIDELITY_TEST) --epochs $(PIPE_RETRAIN_EPOCHS) --seed $(SEED) --out benchmarks/fidelity$(FIDELITY_TAG).json

clean:
	rm -rf pipelines bccd .pytest_cache
