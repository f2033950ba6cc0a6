# crossbit: the front door. `make` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLICKR8K ?= ../shared/datasets/flickr8k
FAISS ?= cpu
PORT ?= 50051
DATA ?= data

.DEFAULT_GOAL := help
.PHONY: help setup test lint proto proto-check serve demo train-default evaluate-default bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

setup: ## create .venv and install crossbit with FAISS (FAISS=cpu or gpu) and the test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[$(FAISS),test]"

test: ## run the test suite (under 10 minutes on 2 cores)
	$(BIN)/python -m pytest -q

lint: ## ruff over the project
	$(BIN)/ruff check .

proto: ## regenerate the gRPC code from proto/crossbit/v1/crossbit.proto
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \
		--grpc_python_out=proto proto/crossbit/v1/crossbit.proto

proto-check: proto ## fail if the committed generated code is not current
	git diff --exit-code -- proto/

serve: ## run the service on the shipped default model (PORT, DATA; web page on PORT+30)
	$(BIN)/crossbit serve --data $(DATA) --port $(PORT) --log-format text

demo: ## start a server, index sample photos, run a few text searches
	$(BIN)/crossbit demo

train-default: ## retrain the shipped 64-bit model from Flickr8k (FLICKR8K=path)
	@test -d $(FLICKR8K) || { echo "Flickr8k not found at $(FLICKR8K): set FLICKR8K=path"; exit 1; }
	$(BIN)/crossbit train --captions $(FLICKR8K)/captions.csv --images $(FLICKR8K)/images \
		--split $(FLICKR8K)/train.txt --bits 64 --out encoders/default_model --cache .cache/features

evaluate-default: ## score the shipped model on Flickr8k dev (writes bench/results/)
	@test -d $(FLICKR8K) || { echo "Flickr8k not found at $(FLICKR8K): set FLICKR8K=path"; exit 1; }
	$(BIN)/crossbit evaluate --captions $(FLICKR8K)/captions.csv --images $(FLICKR8K)/images \
		--split $(FLICKR8K)/dev.txt --json bench/results/flickr8k_dev_default.json --cache .cache/features

bench: ## run the benchmarks (figures printed and written under bench/results/)
	$(BIN)/python bench/model_bits.py --flickr8k $(FLICKR8K)
	$(BIN)/python bench/index_bench.py

clean: ## remove caches (not the venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
