#!/usr/bin/env bash
# Quick Start: one text-to-image request, printing the JSON answer.
#   NB_API_KEY=nb_... bash examples/quickstart.sh
set -euo pipefail

NB_BASE_URL="${NB_BASE_URL:-http://127.0.0.1:8000/api/v1}"
: "${NB_API_KEY:?set NB_API_KEY to your API key}"

curl -sS --fail-with-body -X POST "$NB_BASE_URL/generate" \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer $NB_API_KEY" \
  -d '{
    "prompt": "A cute orange cat sitting on a windowsill",
    "selectedModel": "nano-banana"
  }'
echo
