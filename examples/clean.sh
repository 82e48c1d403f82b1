#!/usr/bin/env bash
# Cleaning: filter by rules, then drop near-duplicates, in one pipe; every dropped row says why.
set -euo pipefail
cd "$(dirname "$0")"
mmtok filter captions.jsonl -o - --min-side 64 --max-aspect 4 --caption-min-words 3 \
    --lang en --drop-mojibake --rejects out/filter-rejects.jsonl \
  | mmtok dedup - -o out/clean --overwrite --json
