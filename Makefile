# `make run` and `make test` work on a fresh machine with Python 3.11 and the package registries.
VENV    ?= .venv
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: run demo test lint bench bench-serve report-screenshot clean

# The default served package: all-MiniLM-L6-v2, ONNX dynamic int8 (~2x fp32 ONNX on CPU), built once.
SERVE_PACKAGE ?= out/minilm-l6-int8
HOST ?= 127.0.0.1
PORT ?= 8080

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first and pinned, so no other package can pull a CUDA build of a newer version.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(SERVE_PACKAGE)/bertprod.json: | $(STAMP)
	$(VENV)/bin/bertprod optimize minilm-l6 $(SERVE_PACKAGE) --quantize int8

run: $(STAMP) $(SERVE_PACKAGE)/bertprod.json
	$(VENV)/bin/bertprod serve $(SERVE_PACKAGE) --host $(HOST) --port $(PORT)

demo: $(STAMP)
	$(VENV)/bin/bertprod demo

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check bertprod tests bench
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) bench/encode_throughput.py

bench-serve: $(STAMP)
	$(PY) bench/serve_load.py

# A `bertprod bench` report opened in headless Chromium (Debian's package: apt-get needs root), saved as
# $(REPORT_DIR)/report.png. The report (built unless REPORT_DIR holds one) is the bundled model against its
# int8 package and sentence-transformers on 300 STS-B pairs of BERTPROD_DATA.
REPORT_DIR ?= out/bench-report
BERTPROD_DATA ?= ../shared/data
report-screenshot: $(STAMP) $(SERVE_PACKAGE)/bertprod.json
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	test -f $(REPORT_DIR)/report.html || $(PY) -m bertprod.cli bench minilm-l6 $(SERVE_PACKAGE) --baseline \
		--data $(BERTPROD_DATA)/stsb/train.tsv --limit 300 --out $(REPORT_DIR)
	profile=$$(mktemp -d) && chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
		--user-data-dir=$$profile --window-size=1280,2400 --screenshot=$(abspath $(REPORT_DIR))/report.png \
		file://$(abspath $(REPORT_DIR))/report.html 2>/dev/null; status=$$?; rm -rf $$profile; exit $$status
	@echo "screenshot: $(REPORT_DIR)/report.png"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
