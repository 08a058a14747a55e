#!/usr/bin/env bash
# Start local GCS (gcp-storage-emulator) and BigQuery (bqemulator) emulators and print the environment to export.
#
#   scripts/start_gcp_emulators.sh --install   # once: create .venv-gcp-emulators with both emulators
#   scripts/start_gcp_emulators.sh             # start both; Ctrl-C stops them
#
# The tests (tests/gcp) start their own emulators; this is for trying the pipeline by hand (docs/bigquery-gcs.md).
set -euo pipefail
cd "$(dirname "$0")/.."

EMULATORS_VENV=.venv-gcp-emulators
# Pinned: the emulators' behaviour (and the workarounds in tests/gcp/emulators.py) is version-specific.
PACKAGES=("bqemulator==1.4.0" "gcp-storage-emulator==2026.7.19" "numpy")

if [[ "${1:-}" == "--install" ]]; then
  python3 -m venv "$EMULATORS_VENV"
  "$EMULATORS_VENV/bin/python" -m pip install -q "${PACKAGES[@]}"
  echo "installed ${PACKAGES[*]} into $EMULATORS_VENV"
  exit 0
fi

PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
exec "$PYTHON" tests/gcp/emulators.py
