#!/usr/bin/env bash
# Issue #14 (data acquisition): the optional dependencies its tests need, installed into the
# active virtualenv (run after .ci/run has created and activated .venv). No apt packages.
# Idempotent; network only to the package index through pip.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet '.[acquire,xlsx]'
