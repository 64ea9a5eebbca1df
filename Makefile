# The two commands of the README: `make run` and `make test`. Each sets up .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch. GPU users: make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
CORES  ?= all
# make run STUDY=<name>: the seed study config/studies/<name>.yaml (<name>.offline: its
# offline variant), run in its own folder runs/<name>/ so studies never share outputs.
STUDY  ?=
CONFIG := $(if $(STUDY),--configfile config/studies/$(STUDY).yaml --directory runs/$(STUDY),)
# Where the outputs land (paths given to snakemake are relative to --directory: results/...).
OUT    := $(if $(STUDY),runs/$(STUDY)/,)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Installed without their dependencies (see README.md, Models): resemblyzer ships GE2E's
# weights; its webrtcvad (a C build) and librosa are not needed. Same pin as
# workflow/envs/speechlens.post-deploy.sh (tests/unit/test_packaging_nodeps.py checks it).
NO_DEPS := resemblyzer==0.1.4
# Test-only reference, also without dependencies (it requires torchaudio, which is not
# installed): SpeechBrain's ECAPA-TDNN, compared in tests/unit/test_adapters_ecapa.py.
TEST_NO_DEPS := speechbrain==1.1.2

.PHONY: run test install lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS)
	$(BIN)/python -m pip install --quiet --no-deps $(TEST_NO_DEPS)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(CONFIG) --report results/report.html --report-after-run
	@echo
	@echo "Figures: $(OUT)results/figures/<corpus>/   Report: $(OUT)results/report.html (open it in a browser)"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/snakefmt --check workflow/Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
