#!/usr/bin/env bash
# spark-submit sparkpyriskscore.py; extra arguments pass through (e.g. --available-now).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/bin/submit" sparkpyriskscore.py "$@"
