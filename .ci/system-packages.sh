#!/usr/bin/env bash
# The system packages the test suite uses, installed with apt only when missing (CI runs as root).
# Python packages come from the project's own `test` extra (pyproject.toml), not from here.
#   chromium, fonts-noto-cjk, poppler-utils, pango   report tests: headless browser, CJK glyphs, pdftotext (#15)
#   postgresql-15                                     ledger tests: a throwaway server per test run (#16)
#   openjdk-17-jre-headless                           Spark tests: local[2] (#18)
#   curl                                              the README's curl session, run as written (#17)
set -euo pipefail
need=()
for pkg in chromium fonts-noto-cjk poppler-utils libpango-1.0-0 libpangoft2-1.0-0; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
