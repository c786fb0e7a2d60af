# nkflow: the two commands a user needs.
#   make run    set up .venv, run the workflow on data/sample, print where the report is
#   make test   set up .venv (and the system packages the tests drive), lint, run every test
#   (both first generate the sample FCS files from the committed seed when missing)
#
# make run CONFIG=my/config.yaml CORES=8   runs on your own data.

PYTHON ?= python3.11
VENV   ?= .venv
CONFIG ?= config/config.yaml
CORES  ?= 2
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nkflow-installed

.PHONY: run test lint setup system-deps sample-data sample-ensure bench clean help

help:
	@sed -n '2,7p' Makefile

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP) sample-ensure
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) \
		--profile workflow/profiles/default
	@PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -c "import sys,yaml; \
	  c=yaml.safe_load(open('$(CONFIG)')); r=c.get('results','results'); \
	  print(f'\nReport: {r}/reports/index.html\nEndpoints: {r}/cohort/endpoints.tsv')"

# Debian packages the tests drive for real: Chromium (report test) and SLURM (cluster test;
# `local-slurm.sh up` installs it). A failure here is reported, and the tests that need the
# package then fail with the reason: they are never skipped.
system-deps:
	bash scripts/install_browser.sh || echo "make: Chromium could not be installed; the browser tests will fail" >&2
	bash tests/cluster/local-slurm.sh up || echo "make: SLURM could not be started; the SLURM tests will fail" >&2

lint: $(STAMP)
	$(BIN)/ruff check nkflow tests scripts bench
	$(BIN)/ruff format --check nkflow tests scripts bench
	$(BIN)/mypy
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/lint_workflow.py

test: $(STAMP) lint system-deps sample-ensure
	PATH="$(abspath $(BIN)):$$PATH" NKFLOW_PUBLIC_DATA="$${NKFLOW_PUBLIC_DATA:-$(abspath ../shared/data/public)}" \
		$(BIN)/python -m pytest -p no:cacheprovider tests; \
		status=$$?; bash tests/cluster/local-slurm.sh down || true; exit $$status

# data/sample/fcs and truth/labels are not committed: regenerate them from the seed when a file
# listed in data/sample/MANIFEST.sha256 is missing or differs (fails if it cannot reproduce them).
sample-ensure: $(STAMP)
	$(BIN)/python scripts/make_sample_data.py --out data/sample --ensure

# rewrite data/sample and its manifest (after changing the generator; commit the result)
sample-data: $(STAMP)
	$(BIN)/python scripts/make_sample_data.py --out data/sample

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/gating.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/cohort.py

clean:
	rm -rf results .snakemake
