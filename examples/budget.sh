#!/usr/bin/env bash
# mmtok's main job on the bundled example images: what the same data costs under Llama 3's
# fixed 4 x 336 px tiles, Qwen2-VL's dynamic resolution and Kimi-VL's MoonViT, before any GPU
# hour is spent: tokens and bytes measured on the 37 rows, then projected to a billion samples
# on 1,024 GPUs (training time, GPU-hours, bytes to read, read rate the loader must sustain).
# Writes the per-row table, __mmtok__/budget.json and the plot into out/budget/.
set -euo pipefail
cd "$(dirname "$0")"

mmtok estimate-budget captions.jsonl \
    --preset llama3-336 --preset qwen2-vl --preset kimi-vl \
    --context 8192 \
    --samples 1e9 --gpus 1024 --tokens-per-gpu-second 3000 --read-gbps 20 \
    --plot out/budget.png -o out/budget --overwrite "$@"
