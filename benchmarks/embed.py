"""Images/s of `mmtok embed` against a plain open_clip loop and the model alone, in one run.

    python benchmarks/embed.py                                  # tiny random model, CPU
    python benchmarks/embed.py --arch ViT-B-32 --device cuda --images 20000 --workers 14
    python benchmarks/embed.py --arch ViT-B-32 --device cuda --images 20000 --workers 14 --gpu-decode
    python benchmarks/embed.py --arch ViT-L-14 --device cuda --images 8000 --workers 14

Three figures on the same JPEG files and the same weights (random weights of `--arch` written as
an open_clip local-dir, or the tiny 2-layer test model):

- mmtok: `python -m mmtok embed` as a subprocess, whole process (start-up, model load, pool
  start, decode, model, Parquet writes), and the pipeline alone (the manifest's timing);
- plain loop: open_clip's own preprocess in a torch `DataLoader` with the same number of
  workers, then `encode_image` (bf16 autocast on CUDA) and `.cpu()`, as a user would write it;
- model only: `encode_image` on synthetic uint8 batches already on the device.

On CUDA it also samples `nvidia-smi` for the GPU utilisation of each phase.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` photo-like baseline JPEGs of typical web sizes (375-700 px), and a JSONL listing."""
    rng = np.random.default_rng(seed)
    sizes = [(500, 375), (640, 480), (480, 640), (700, 525), (600, 400)]
    templates = []
    for w, h in sizes:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x * 3 + y) % 256], axis=2)
        templates.append(base)
    rows = []
    for i in range(n):
        base = templates[i % len(templates)]
        noise = rng.integers(0, 48, base.shape)
        im = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
        path = folder / f"img_{i:06d}.jpg"
        im.save(path, "JPEG", quality=85)
        rows.append(json.dumps({"image": str(path), "caption": f"photo {i}"}))
    listing = folder / "images.jsonl"
    listing.write_text("\n".join(rows) + "\n")
    return listing


def make_model(folder: Path, arch: str | None) -> Path:
    from mmtok.models.tiny import tiny_model_cfg, write_local_dir

    if arch is None:
        return write_local_dir(folder / "tiny", model_cfg=tiny_model_cfg())
    import open_clip

    return write_local_dir(folder / arch, model_cfg=open_clip.get_model_config(arch))


class GpuSampler:
    """Mean GPU utilisation from nvidia-smi while a phase runs (None without nvidia-smi)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []

    def __enter__(self):
        self.stop = threading.Event()
        if self.enabled:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self):
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self.stop.wait(0.2):
            out = subprocess.run(query, capture_output=True, text=True).stdout.split()
            if out:
                self.samples.append(float(out[0]))

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def run_mmtok(listing, model_dir, out, args, gpu) -> dict:
    command = [sys.executable, "-m", "mmtok", "embed", str(listing), "-o", str(out)]
    command += ["--model", f"local-dir:{model_dir}", "--device", args.device, "--json"]
    command += ["--workers", str(args.workers), "--overwrite"]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    if args.gpu_decode:
        command += ["--gpu-decode"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with GpuSampler(gpu) as sampler:
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"mmtok embed failed:\n{done.stderr}")
    doc = json.loads(done.stdout)
    return {
        "whole_process_s": round(seconds, 2),
        "images_per_s": round(doc["counts"]["out"] / seconds, 1),
        "pipeline_images_per_s": doc["timing"]["rows_per_second"],
        "batch_size": doc["batch_size"],
        "gpu_util_pct": sampler.mean,
    }


class Files:
    """A torch Dataset of image paths through open_clip's preprocess (as a user would write)."""

    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.preprocess(im)


def run_plain_loop(paths, model, preprocess, args, device, gpu) -> dict:
    import torch

    autocast = torch.autocast("cuda", torch.bfloat16) if device.startswith("cuda") else None
    loader = torch.utils.data.DataLoader(
        Files(paths, preprocess),
        batch_size=args.batch_size or (256 if device.startswith("cuda") else 64),
        num_workers=args.workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
        multiprocessing_context="spawn" if args.workers else None,
    )
    n, first, n_first = 0, None, 0
    with GpuSampler(gpu) as sampler:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x in loader:
                if first is None:  # the DataLoader's workers have started (each imports torch)
                    first, n_first = time.perf_counter(), len(x)
                x = x.to(device, non_blocking=True)
                if autocast is not None:
                    with autocast:
                        emb = model.encode_image(x)
                else:
                    emb = model.encode_image(x)
                torch.nn.functional.normalize(emb.float(), dim=-1).half().cpu()
                n += len(x)
        seconds = time.perf_counter() - t0
    steady = (n - n_first) / (t0 + seconds - first) if n > n_first else None
    return {
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 1),
        "after_first_batch_images_per_s": round(steady, 1) if steady else None,
        "gpu_util_pct": sampler.mean,
    }


def run_model_only(model, size, args, device, gpu) -> dict:
    import torch

    batch = args.batch_size or (256 if device.startswith("cuda") else 64)
    pixels = torch.randint(0, 256, (batch, size[0], size[1], 3), dtype=torch.uint8, device=device)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=device).view(-1, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=device).view(-1, 1, 1)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.startswith("cuda") else None

    def step():
        x = pixels.permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
        if autocast is not None:
            with autocast:
                return model.encode_image(x)
        return model.encode_image(x)

    with torch.inference_mode():
        step()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        steps = max(3, args.images // batch)
        with GpuSampler(gpu) as sampler:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
    return {"images_per_s": round(steps * batch / seconds, 1), "gpu_util_pct": sampler.mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--arch", default=None, help="open_clip architecture (random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--gpu-decode", action="store_true", help="mmtok embed --gpu-decode")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # open_clip: "initialized randomly" (we load next)

    import open_clip
    import torch

    from mmtok.models.runtime import resolve_device

    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    if not gpu:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="mmtok-bench-embed-"))
    try:
        t0 = time.perf_counter()
        (work / "images").mkdir()
        listing = make_images(work / "images", args.images)
        model_dir = make_model(work, args.arch)
        setup_s = time.perf_counter() - t0
        paths = [json.loads(line)["image"] for line in listing.read_text().splitlines()]

        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
        model = model.to(device).eval()
        size = model.visual.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)

        result = {
            "machine": {
                "device": torch.cuda.get_device_name(device) if gpu else "cpu",
                "cpu_cores": os.cpu_count(),
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
            },
            "model": args.arch or "tiny 2-layer ViT at 64 px (random)",
            "images": args.images,
            "workers": args.workers,
            "gpu_decode": args.gpu_decode,
            "setup_s": round(setup_s, 1),
            "model_only": run_model_only(model, size, args, device, gpu),
            "plain_loop": run_plain_loop(paths, model, preprocess, args, device, gpu),
            "mmtok": run_mmtok(listing, model_dir, work / "out", args, gpu),
        }
        m, plain, only = result["mmtok"], result["plain_loop"], result["model_only"]
        result["ratios"] = {
            "mmtok_whole_process / plain_loop": round(m["images_per_s"] / plain["images_per_s"], 2),
            "mmtok_pipeline / plain_loop": round(
                m["pipeline_images_per_s"] / plain["images_per_s"], 2
            ),
            "mmtok_pipeline / model_only": round(
                m["pipeline_images_per_s"] / only["images_per_s"], 3
            ),
        }
        print(json.dumps(result, indent=2))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
