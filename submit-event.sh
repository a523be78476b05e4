#!/usr/bin/env bash
# spark-submit sparkpyeventskafkastreamtoconsole.py; extra arguments pass through (e.g. --available-now).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/bin/submit" sparkpyeventskafkastreamtoconsole.py "$@"
