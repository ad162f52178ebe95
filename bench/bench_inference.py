"""Inference latency of the vits model at 518 px on this machine, as ratios against plain fp32 eager.

Baseline (measured in the same run): ``model(x)`` in fp32, eager, no inference mode. Variants go through
``DepthEstimator.forward`` (inference mode, autocast) with fp32 / bf16 and optionally ``torch.compile``.
Input: a 640x480 image preprocessed to 518x686 (weights are random: latency does not depend on them).

    python bench/bench_inference.py [--runs 10] [--no-compile] [--checkpoint FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from depth_ros.checkpoints import CheckpointMetadata
from depth_ros.estimator import DepthEstimator
from depth_ros.models import DepthAnythingV2


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (slow to build)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = DepthAnythingV2("vits", "metric", 20.0).eval()
    metadata = CheckpointMetadata("vits", "metric", 20.0)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    reference = DepthEstimator(model, metadata, device="cpu")
    batch = reference.preprocess(rgb)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(batch.shape)}, "
          f"median of {args.runs} runs")

    def baseline():
        with torch.no_grad():
            model(batch)

    base = median_ms(baseline, args.runs, args.warmup)
    rows = [("fp32 eager, plain forward (baseline)", base)]
    variants = [("fp32", False), ("bf16", False)]
    if not args.no_compile:
        variants += [("fp32", True), ("bf16", True)]
    for precision, compiled in variants:
        estimator = DepthEstimator(model, metadata, device="cpu", precision=precision, compile=compiled)
        start = time.perf_counter()
        estimator.forward(batch)  # compiles on first call
        build = time.perf_counter() - start
        ms = median_ms(lambda e=estimator: e.forward(batch), args.runs, args.warmup)
        label = f"{precision} {'torch.compile' if compiled else 'eager'}, DepthEstimator.forward"
        if compiled:
            label += f" (first call {build:.0f} s)"
        rows.append((label, ms))
    print(f"{'variant':62s} {'median ms':>10s} {'speed-up':>9s}")
    for label, ms in rows:
        print(f"{label:62s} {ms:10.1f} {base / ms:8.2f}x")


if __name__ == "__main__":
    main()
