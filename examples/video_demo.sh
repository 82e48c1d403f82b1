#!/usr/bin/env bash
# Video frames, end to end: sample frames from a few generated clips, look at them with tile,
# and price the clips next to images with estimate-budget (needs `pip install 'mmtok[video]'`).
set -euo pipefail
cd "$(dirname "$0")"

python make_example_videos.py out/clips

# Qwen2-VL's video rule: 2 fps, an even count of 4..768 frames; one image row per frame.
mmtok sample-frames out/clips --preset qwen2-vl -o out/frames --overwrite

echo
echo "One row per video (out/frames/__mmtok__/videos.parquet):"
python - <<'PY'
import pyarrow.parquet as pq
cols = ["video_path", "codec", "duration", "frame_count", "vfr", "rotation", "decoder",
        "frames_sampled", "vision_tokens"]
for row in pq.read_table("out/frames/__mmtok__/videos.parquet", columns=cols).to_pylist():
    row["video_path"] = row["video_path"].rsplit("/", 1)[-1]
    row["duration"] = round(row["duration"], 2)
    print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
PY

echo
echo "The frames are image rows: tile them for Qwen2-VL"
mmtok tile out/frames --preset qwen2-vl -o out/frames_tiled --overwrite

echo
echo "Videos and the example images together, from headers and container metadata (no decode):"
mmtok estimate-budget out/clips images -p qwen2-vl -p internvl -p llava-onevision
