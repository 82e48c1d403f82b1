#!/usr/bin/env bash
# Piping: JSON Lines flow from one mmtok command to the next; rejects go to their own file.
set -euo pipefail
cd "$(dirname "$0")"
mmtok probe captions.jsonl -o - --rejects out/pipe-rejects.jsonl \
  | mmtok probe - -o out/piped --overwrite --json
