#!/usr/bin/env bash
# The quickstart from README.md: probe the bundled example images (37 rows, two of them bad).
set -euo pipefail
cd "$(dirname "$0")"

# Header probe plus a full decode of every image, into a dataset folder.
mmtok probe captions.jsonl -o out/probed --decode-check --overwrite

echo
echo "Rejected rows and why (out/probed/__mmtok__/rejects.parquet):"
python - <<'PY'
import pyarrow.parquet as pq
for row in pq.read_table("out/probed/__mmtok__/rejects.parquet", columns=["image", "reason", "message"]).to_pylist():
    print(f"  {row['reason']:<14} {row['message']}")
PY
