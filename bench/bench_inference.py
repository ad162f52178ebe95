"""Inference latency on this machine: ViT-S variants as ratios against plain fp32 eager, PackNet against ViT-S, and
the full depth pipeline rate with tiny PackNet.

Part 1, ViT-S at 518 px: baseline (measured in the same run) ``model(x)`` in fp32, eager, no inference mode;
variants go through ``DepthEstimator.forward`` (inference mode, autocast) with fp32 / bf16 and optionally
``torch.compile``. Input: a 640x480 image preprocessed to 518x686.

Part 2, PackNet tiny and slim against ViT-S, each at the input depth_node uses for a 640x480 camera by default (the
checkpoint's training size: 518 -> 518x686 for Depth Anything V2, 192 -> 192x256 for PackNet), fp32 eager
``DepthEstimator.forward``; runs of the three models are interleaved so that load from other processes hits them
alike (target: tiny >= 10x faster than ViT-S).

Part 3, depth_node's code path for a 640x480 Image with a tiny PackNet checkpoint and the default node parameters
(``bench_pipeline.benchmark_stages``: deserialise, decode, DepthPipeline preprocess / inference / postprocess /
cloud / grid, serialise outputs): images/s = 1 / sum of the stage medians (target >= 15).

Part 4, backends: the whole ``DepthEstimator.infer`` call (preprocessing to upsampled depth) for the 640x480 image
at 518 px with the same ViT-S weights on every backend and precision that runs here (torch fp32 / bf16; ONNX Runtime
fp32; OpenVINO fp32 / bf16 / fp16 where the CPU has them; TensorRT and ONNX Runtime CUDA with a GPU), as ratios
against today's plain torch fp32 path, interleaved; plus each one's depth difference to it and its start-up time
(export, compile, self-check; exports are cached, so the first run is the slow one).

Weights are random: latency does not depend on them.

    python bench/bench_inference.py [--runs 10] [--no-compile] [--threads N] [--backends-only]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from depth_ros.backends import BACKEND_CLASSES, BackendError, relative_difference
from depth_ros.checkpoints import CheckpointMetadata, save_checkpoint
from depth_ros.estimator import DepthEstimator
from depth_ros.models import DepthAnythingV2, create_model


def median_ms(fn, runs: int, warmup: int) -> float:
    return statistics.median(interleaved_ms({"": fn}, runs, warmup)[""])


def interleaved_ms(fns: dict, runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds of each of ``runs`` calls of each function, calling them in turn, after ``warmup`` rounds."""
    times = {label: [] for label in fns}
    for run in range(warmup + runs):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            if run >= warmup:
                times[label].append((time.perf_counter() - start) * 1e3)
    return times


def vits_variants(model, metadata, batch, args) -> None:
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


def packnet_against_vits(vits: DepthEstimator, rgb: np.ndarray, args) -> None:
    estimators = {"vits": vits}
    for variant in ("tiny", "slim"):
        metadata = CheckpointMetadata(variant, "metric", 20.0, architecture="packnet")
        estimators[f"packnet {variant}"] = DepthEstimator(create_model(metadata), metadata, device="cpu")
    batches = {label: e.preprocess(rgb) for label, e in estimators.items()}
    times = interleaved_ms({label: lambda e=e, b=batches[label]: e.forward(b) for label, e in estimators.items()},
                           args.runs, args.warmup)
    median = {label: statistics.median(values) for label, values in times.items()}
    fastest = {label: min(values) for label, values in times.items()}
    print("\nat depth_node's default input for 640x480, fp32 eager DepthEstimator.forward, interleaved runs "
          "(min: the least disturbed run):")
    print(f"{'model':14s} {'input':>9s} {'params':>8s} {'median ms':>10s} {'vs vits':>8s} {'min ms':>8s} "
          f"{'vs vits':>8s}")
    for label, e in estimators.items():
        height, width = batches[label].shape[-2:]
        params = sum(p.numel() for p in e.model.parameters()) / 1e6
        print(f"{label:14s} {f'{height}x{width}':>9s} {params:7.1f}M {median[label]:10.1f} "
              f"{median['vits'] / median[label]:7.1f}x {fastest[label]:8.1f} {fastest['vits'] / fastest[label]:7.1f}x")


def packnet_pipeline_rate(args) -> None:
    from bench_pipeline import benchmark_stages, camera_frame

    from depth_ros.pipeline import DepthPipeline
    from depth_ros.ros.params import NodeConfig

    frame = camera_frame()
    metadata = CheckpointMetadata("tiny", "metric", 20.0, architecture="packnet")
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as folder:
        checkpoint = save_checkpoint(Path(folder) / "packnet_tiny.pth", create_model(metadata), metadata)
        config = NodeConfig.from_values({"checkpoint": str(checkpoint)})
        pipeline = DepthPipeline.from_config(config)
    stages = benchmark_stages(pipeline, frame, config, args.runs, args.warmup)
    total = sum(stages.values())
    print(f"\ndepth_node code path, packnet tiny at {pipeline.estimator.network_size(480, 640)}, 640x480 rgb8, default "
          f"parameters: {total * 1000:.1f} ms per image = {1 / total:.1f} images/s (target >= 15)")
    print("  " + ", ".join(f"{stage} {seconds * 1000:.1f}" for stage, seconds in stages.items()) + " (ms)")


def backends_against_torch(model, metadata, rgb: np.ndarray, args) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    variants = {"torch fp32 cpu (baseline)": {"precision": "fp32"}, "torch bf16 cpu": {"precision": "bf16"}}
    for name, backend in BACKEND_CLASSES.items():
        for device in [d for d in devices if d in backend.DEVICES] or backend.DEVICES[:1]:
            for precision in backend.PRECISIONS:
                variants[f"{name} {precision} {device}"] = {"backend": name, "precision": precision, "device": device}
    estimators, startup, skipped = {}, {}, {}
    for label, options in variants.items():
        options = {"device": "cpu", **options}
        start = time.perf_counter()
        try:
            network = model if options["device"] == "cpu" else copy.deepcopy(model)  # the estimator moves it
            estimators[label] = DepthEstimator(network, metadata, **options)
        except (BackendError, ValueError) as error:
            skipped[label] = str(error)
            continue
        startup[label] = time.perf_counter() - start
    baseline = next(iter(estimators))
    reference = estimators[baseline].infer(rgb)
    times = interleaved_ms({label: lambda e=e: e.infer(rgb) for label, e in estimators.items()}, args.runs,
                           args.warmup)
    median = {label: statistics.median(values) for label, values in times.items()}
    size = estimators[baseline].network_size(480, 640)
    print(f"\nbackends: whole DepthEstimator.infer, 640x480 rgb at 518 px ({size[0]}x{size[1]} network input), "
          "interleaved runs:")
    print(f"{'backend precision device':34s} {'median ms':>10s} {'speed-up':>9s} {'max rel diff':>13s} "
          f"{'start-up s':>11s}")
    for label, estimator in estimators.items():
        difference = relative_difference(estimator.infer(rgb), reference)
        print(f"{label:34s} {median[label]:10.1f} {median[baseline] / median[label]:8.2f}x {difference:13.1e} "
              f"{startup[label]:11.1f}")
    for label, reason in skipped.items():
        print(f"{label:34s} not run: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (slow to build)")
    parser.add_argument("--backends-only", action="store_true", help="run part 4 (backends) only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch compute threads (default: torch's, one per core); 1 isolates compute from "
                             "other processes' load on a shared CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = DepthAnythingV2("vits", "metric", 20.0).eval()
    metadata = CheckpointMetadata("vits", "metric", 20.0)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    reference = DepthEstimator(model, metadata, device="cpu")
    batch = reference.preprocess(rgb)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(batch.shape)}, "
          f"median of {args.runs} runs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} "
          "CPUs")
    if not args.backends_only:
        vits_variants(model, metadata, batch, args)
        packnet_against_vits(reference, rgb, args)
        packnet_pipeline_rate(args)
    backends_against_torch(model, metadata, rgb, args)


if __name__ == "__main__":
    main()
