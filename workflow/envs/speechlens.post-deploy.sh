#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) inside the new speechlens env: packages installed without
# their dependencies, as `make install` does (same pin as the Makefile's NO_DEPS).
# resemblyzer ships GE2E's weights; its webrtcvad (a C build) and librosa are not needed.
set -euo pipefail
python -m pip install --no-deps resemblyzer==0.1.4
