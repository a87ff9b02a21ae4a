#!/bin/sh
# Issue #11/#12 data input: the .xlsx reader the tests use (no apt packages needed). Idempotent.
set -e
pip install -q 'python-calamine>=0.2'
