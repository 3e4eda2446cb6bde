# Two set-up commands work on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PSPSIM := $(PY) -m pspsim
DEMO_IN := experiments/psp-roundtrip
DEMO_OUT := results/psp-roundtrip

.PHONY: demo psp-roundtrip test bench fuzz lint validate clean

$(STAMP): pyproject.toml setup.py pspsim/wire/_psp_fast.pyx pspsim/wire/_esp_fast.pyx $(wildcard pspsim/model/*.pyx)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PSPSIM) run experiments/quickstart.toml -o results/quickstart

psp-roundtrip: $(STAMP)
	$(PSPSIM) psp encrypt --cfg $(DEMO_IN)/encrypt.cfg $(DEMO_IN)/cleartext.pcap $(DEMO_OUT)/encrypted.pcap
	$(PSPSIM) psp decrypt --cfg $(DEMO_IN)/decrypt.cfg $(DEMO_OUT)/encrypted.pcap $(DEMO_OUT)/decrypted.pcap
	$(PY) -c "from pspsim.wire import read_pcap as r; \
	  assert r('$(DEMO_IN)/cleartext.pcap')[1] == r('$(DEMO_OUT)/decrypted.pcap')[1]; \
	  print('round trip: all packets came back byte for byte')"
	$(PSPSIM) overhead -o $(DEMO_OUT)/overhead.csv --plot $(DEMO_OUT)/overhead.png > /dev/null
	@echo "wrote $(DEMO_OUT)/encrypted.pcap, decrypted.pcap, overhead.csv, overhead.png"

test: $(STAMP)
	$(PY) -m pytest -q

# The packet tier against the fleet model on every scenario of experiments/crosscheck/
# (reports in results/scratch/crosscheck/; exit 1 if any comparison is outside its tolerance).
validate: $(STAMP)
	@mkdir -p results/scratch/crosscheck
	@status=0; for f in experiments/crosscheck/*.toml; do \
	  name=$$(basename $$f .toml); \
	  $(PSPSIM) crosscheck $$f -o results/scratch/crosscheck/$$name.csv > results/scratch/crosscheck/$$name.txt 2>&1 || status=1; \
	  echo "$$name: $$(tail -1 results/scratch/crosscheck/$$name.txt)"; \
	done; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/run.py

# 1,000,000 generated inputs per decoder (PSP, ESP, TLS 1.3/1.2, pcap, cfg, header); a few minutes
fuzz: $(STAMP)
	$(PY) -m tests.fuzz_decoders --inputs 1000000
# ruff (style, bugs, imports), import-linter (the layers of docs/DESIGN.md) and mypy (the modules
# listed in pyproject.toml). All three run; any failing fails the target.
LINT_STAMP := $(VENV)/.lint-installed
$(LINT_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	@status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/lint-imports || status=1; \
	  $(VENV)/bin/mypy || status=1; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis pspsim/wire/_psp_fast.c pspsim/wire/_esp_fast.c pspsim/wire/*.so pspsim/model/_*.c pspsim/model/*.so
