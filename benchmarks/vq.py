"""Images/s of the VQ tokenizer (default: the full Chameleon config at 512 px, random weights):
model-only against end to end, precision modes with their id agreement against fp32.

    python benchmarks/vq.py --images 8                                    # CPU, a few minutes
    python benchmarks/vq.py --device cuda --images 256 --batch-size 16,32,64,128 \\
        --precision fp32,tf32,bf16 --channels-last both --e2e-images 2048 --workers 14
    python benchmarks/vq.py --device cuda --images 512 --batch-size 64 --precision bf16 \\
        --channels-last both --compile --no-e2e

Figures, all on the same random weights (the codebook drawn from the latents, so that ids
spread over the codebook as with trained weights) and the same photo-like JPEG files:

- model only: `to_model_input` + `encode_ids` on preprocessed uint8 batches already on the
  device, per batch size x precision x memory layout; id agreement of every mode with fp32
  (same batch, contiguous layout), and on CUDA of fp32 with the CPU reference on a few images;
- preprocess only: decode + the family's exact preprocessing in a process pool (`--workers`);
- end to end: `python -m mmtok tokenize-images` as a subprocess when the command exists in this
  tree (whole process, and the pipeline alone from its manifest timing), otherwise this
  script's own loop (the process pool feeding the model); the ratio to model-only at the same
  batch size and precision is the figure to watch (target >= 0.9).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmtok.models.vq import (  # noqa: E402
    build_model,
    load_config,
    preprocess,
    set_precision,
    to_model_input,
)
from mmtok.models.vq.tiny import random_state_dict, synthetic_images  # noqa: E402

WEB_SIZES = [(500, 375), (640, 480), (480, 640), (700, 525), (600, 400), (1024, 768)]


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` photo-like JPEGs of web sizes: up to 24 distinct pictures, copied to `n` files (the
    decode and resize cost is per file; generating thousands of pictures would be slow)."""
    folder.mkdir(parents=True, exist_ok=True)
    unique = []
    for i in range(min(n, 24)):
        w, h = WEB_SIZES[i % len(WEB_SIZES)]
        pixels = synthetic_images(1, max(w, h), seed + i)[0][:h, :w]
        path = folder / f"img_{i:06d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=88)
        unique.append(path)
    paths = list(unique)
    for i in range(len(unique), n):
        path = folder / f"img_{i:06d}.jpg"
        shutil.copyfile(unique[i % len(unique)], path)
        paths.append(path)
    return paths


def _preprocess_file(args: tuple[str, str]) -> np.ndarray:
    path, config_name = args
    with Image.open(path) as im:
        im.load()
        return preprocess(im, load_config(config_name))


def preprocess_all(paths: list[Path], config_name: str, workers: int):
    """Decode + preprocess in a spawn pool; yields uint8 arrays in order."""
    jobs = [(str(p), config_name) for p in paths]
    if workers <= 1:
        yield from map(_preprocess_file, jobs)
        return
    with get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_preprocess_file, jobs, chunksize=4)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encode(model, batch, precision: str, device: str, channels_last: bool):
    import torch

    with torch.inference_mode(), set_precision(precision, device.split(":")[0]):
        return model.encode_ids(to_model_input(batch, channels_last=channels_last))


def model_only(model, pixels: np.ndarray, args, device: str) -> list[dict]:
    """One row per batch size x precision x layout: images/s and agreement with fp32."""
    import torch

    rows = []
    reference: dict[int, torch.Tensor] = {}
    layouts = {"no": [False], "yes": [True], "both": [False, True]}[args.channels_last]
    for batch_size in args.batch_sizes:
        reps = -(-len(pixels) // batch_size)
        tiled = np.resize(pixels, (batch_size, *pixels.shape[1:]))  # repeats to fill the batch
        batch = torch.from_numpy(tiled).to(device)
        for channels_last in layouts:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model.to(memory_format=fmt)
            for precision in args.precisions:
                ids, warm_up = None, 0.0
                if device != "cpu" or args.compile:  # cuDNN plans, allocator, compilation
                    t0 = time.perf_counter()
                    ids = encode(model, batch, precision, device, channels_last)
                    sync(device)
                    warm_up = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(reps):
                    out = encode(model, batch, precision, device, channels_last)
                    ids = out if ids is None else ids
                sync(device)
                seconds = time.perf_counter() - t0
                ids = ids.cpu()
                if precision == "fp32" and not channels_last:
                    reference[batch_size] = ids
                ref = reference.get(batch_size)
                agree = float((ids == ref).float().mean()) if ref is not None else None
                rows.append(
                    {
                        "batch": batch_size,
                        "precision": precision,
                        "channels_last": channels_last,
                        "images": reps * batch_size,
                        "seconds": round(seconds, 3),
                        "warm_up_seconds": round(warm_up, 2),
                        "images_per_s": round(reps * batch_size / seconds, 4),
                        "agreement_vs_fp32": agree,
                        "distinct_ids": int(torch.unique(ids).numel()),
                    }
                )
                print(_row_text(rows[-1]), flush=True)
        model.to(memory_format=torch.contiguous_format)
    return rows


def _row_text(r: dict) -> str:
    agree = "" if r["agreement_vs_fp32"] is None else f"{100 * r['agreement_vs_fp32']:.2f}%"
    layout = "channels_last" if r["channels_last"] else "contiguous"
    return (
        f"  model-only batch {r['batch']:>4} {r['precision']:>4} {layout:<13} "
        f"{r['images_per_s']:>9.3g} img/s  ids = fp32: {agree:>8}  ({r['distinct_ids']} distinct)"
    )


def cpu_agreement(model, pixels: np.ndarray, device: str, n: int) -> float | None:
    """fp32 on `device` against fp32 on the CPU (the reference) for `n` images."""
    import torch

    if n <= 0 or device == "cpu":
        return None
    batch = torch.from_numpy(pixels[:n])
    on_device = encode(model, batch.to(device), "fp32", device, False).cpu()
    model.cpu()
    on_cpu = encode(model, batch, "fp32", "cpu", False)
    model.to(device)
    return float((on_device == on_cpu).float().mean())


def command_available() -> bool:
    return importlib.util.find_spec("mmtok.cli.tokenize_images") is not None


def end_to_end_command(paths, checkpoint, args, precision: str, batch: int, out: Path) -> dict:
    listing = out.parent / "images.jsonl"
    listing.write_text("".join(json.dumps({"image": str(p)}) + "\n" for p in paths))
    cmd = [
        sys.executable, "-m", "mmtok", "tokenize-images", str(listing), "-o", str(out),
        "--tokenizer", args.config, "--checkpoint", str(checkpoint), "--device", args.device,
        "--batch-size", str(batch), "--precision", precision, "--overwrite", "--json",
    ]  # fmt: skip
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"tokenize-images failed ({done.returncode}):\n{done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    timing = doc.get("timing") or {}
    rows = doc["counts"]["out"]
    return {
        "how": "mmtok tokenize-images",
        "precision": precision,
        "batch": batch,
        "images": rows,
        "process_seconds": round(wall, 2),
        "process_images_per_s": round(rows / wall, 4),
        "pipeline_seconds": timing.get("seconds"),
        "images_per_s": timing.get("rows_per_second"),
    }


def end_to_end_loop(model, paths, args, precision: str, batch_size: int, device: str) -> dict:
    """The fallback without the command: the pool's arrays, batched, to the model."""
    import torch

    t0 = time.perf_counter()
    pending: list[np.ndarray] = []
    done = 0
    for array in preprocess_all(paths, args.config, args.workers):
        pending.append(array)
        if len(pending) == batch_size:
            batch = torch.from_numpy(np.stack(pending)).to(device, non_blocking=True)
            encode(model, batch, precision, device, False).cpu()
            done, pending = done + len(pending), []
    if pending:
        encode(model, torch.from_numpy(np.stack(pending)).to(device), precision, device, False)
        done += len(pending)
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "how": "benchmark loop (pool + model)",
        "precision": precision,
        "batch": batch_size,
        "images": done,
        "pipeline_seconds": round(seconds, 2),
        "images_per_s": round(done / seconds, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="chameleon", help="built-in name or JSON file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8, help="model-only images per setting")
    parser.add_argument("--batch-size", default=None, help="comma list (default 4 CPU, 64 CUDA)")
    parser.add_argument(
        "--precision",
        default=None,
        help="comma list (default fp32,tf32,bf16 on CUDA; fp32,bf16 on CPU, where tf32 is fp32)",
    )
    parser.add_argument("--channels-last", choices=["no", "yes", "both"], default="no")
    parser.add_argument("--e2e-images", type=int, default=None, help="default: --images")
    parser.add_argument(
        "--e2e-precision", default=None, help="default: every --precision on CUDA, fp32 on CPU"
    )
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--cpu-check", type=int, default=2, help="CUDA: images vs CPU fp32")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the encoder (model-only figures)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    import torch

    cuda = args.device.startswith("cuda")
    default_batch = "64" if cuda else "4"
    args.batch_sizes = [int(b) for b in (args.batch_size or default_batch).split(",")]
    args.precisions = (args.precision or ("fp32,tf32,bf16" if cuda else "fp32,bf16")).split(",")
    if "fp32" in args.precisions:  # first: the reference for the agreement rates
        args.precisions.remove("fp32")
    args.precisions.insert(0, "fp32")
    e2e_precisions = (args.e2e_precision or (",".join(args.precisions) if cuda else "fp32")).split(
        ","
    )
    config = load_config(args.config)
    device = args.device
    machine = torch.cuda.get_device_name(device) if cuda else f"CPU x{torch.get_num_threads()}"
    print(
        f"{config.name}: {config.resolution} px, {config.tokens} ids, {machine}, torch {torch.__version__}"
    )

    work = Path(tempfile.mkdtemp(prefix="mmtok-vq-bench-"))
    try:
        t0 = time.perf_counter()
        state = random_state_dict(config, 0, decoder=False, pool_size=min(config.resolution, 128))
        checkpoint = work / "vq.safetensors"
        from safetensors.torch import save_file

        save_file(state, str(checkpoint))
        model = build_model(config)
        model.load_state_dict(state)
        model.to(device)
        if args.compile:
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = 64  # one graph per batch x precision x layout
            model.encoder.compile(dynamic=False)
        e2e_count = args.e2e_images or args.images
        paths = make_images(work / "images", max(e2e_count, args.images))
        print(f"setup (weights, {len(paths)} JPEGs): {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        pixels = np.stack(list(preprocess_all(paths[: args.images], args.config, args.workers)))
        seconds = time.perf_counter() - t0
        prep = {
            "workers": args.workers,
            "images": len(pixels),
            "images_per_s": round(len(pixels) / seconds, 4),
        }
        print(
            f"  preprocess only ({args.workers} workers, pool start included): {prep['images_per_s']:.3g} img/s"
        )

        rows = model_only(model, pixels, args, device)
        cpu_agree = cpu_agreement(model, pixels, device, args.cpu_check if cuda else 0)
        if cpu_agree is not None:
            print(
                f"  fp32 on {device} vs fp32 on CPU: {100 * cpu_agree:.2f}% ids equal ({args.cpu_check} images)"
            )

        e2e = []
        if cuda:
            torch.cuda.empty_cache()  # the command runs in its own process on the same GPU
        if not args.no_e2e:
            for precision in e2e_precisions:
                best = max(
                    (r for r in rows if r["precision"] == precision and not r["channels_last"]),
                    key=lambda r: r["images_per_s"],
                )
                if command_available():
                    result = end_to_end_command(
                        paths[:e2e_count],
                        checkpoint,
                        args,
                        precision,
                        best["batch"],
                        work / f"out-{precision}",
                    )
                else:
                    result = end_to_end_loop(
                        model, paths[:e2e_count], args, precision, best["batch"], device
                    )
                result["model_only_images_per_s"] = best["images_per_s"]
                if result["images_per_s"]:
                    result["ratio"] = round(result["images_per_s"] / best["images_per_s"], 3)
                e2e.append(result)
                print(
                    f"  end to end ({result['how']}) {precision} batch {result['batch']}: "
                    f"{result['images_per_s'] or 0:.3g} img/s over {result['images']} images = "
                    f"{result.get('ratio')} x model-only ({best['images_per_s']:.3g} img/s)"
                    + (
                        f"; whole process {result['process_images_per_s']:.3g} img/s"
                        if "process_images_per_s" in result
                        else ""
                    ),
                    flush=True,
                )
        summary = {
            "config": config.name,
            "machine": machine,
            "torch": torch.__version__,
            "model_only": rows,
            "preprocess_only": prep,
            "fp32_device_vs_cpu": cpu_agree,
            "end_to_end": e2e,
        }
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
