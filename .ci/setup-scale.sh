#!/usr/bin/env bash
# What the tests of ruleengine.scale need (issue #18): Java for Spark, and the spark/dask extras.
# Idempotent; run as root from the repository root, before the test run. Network: apt and pip only.
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
    apt-get update
    apt-get install -y openjdk-17-jre-headless
fi
python -m pip install -q '.[spark,dask]'
java -version 2>&1 | head -1
