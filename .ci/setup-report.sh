#!/usr/bin/env bash
# Issue #15 (ruleengine/report/): what the report tests need. Idempotent; run as root, inside the
# project's virtualenv (CI: after `. .venv/bin/activate`). Network: apt and pip only.
#   chromium        - the browser test opens the HTML report in Debian's headless Chromium
#   fonts-noto-cjk  - Chinese glyphs for the browser and for the PDF (WeasyPrint embeds a subset)
#   poppler-utils   - pdftotext / pdffonts / pdfinfo read the PDF back
#   WeasyPrint's own libraries (pango, harfbuzz) come with chromium's dependencies on Debian 12;
#   libpango-1.0-0 and libpangoft2-1.0-0 are named so that they are there without it.
set -euo pipefail
need=()
for pkg in chromium fonts-noto-cjk poppler-utils libpango-1.0-0 libpangoft2-1.0-0; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
# the report extra, and playwright's Python driver for the browser test (it drives /usr/bin/chromium;
# no browser is downloaded: `playwright install` is never run)
pip install --quiet -e '.[report]' 'playwright>=1.40'
