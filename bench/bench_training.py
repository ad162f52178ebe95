#!/usr/bin/env python3
"""Training throughput (images/s): both objectives, optimised loops against a plain fp32 loop, in one run.

Every variant runs the trainers' own step (``objective.loss``: forward and loss; backward; gradient clipping; AdamW
with the encoder/head groups) on the same random batches at the configured input size, in interleaved rounds so
that load from other processes affects all variants alike; the median round counts. Objectives: ``silog`` (square
crops with depth labels, the supervised trainer) and ``photometric`` (whole network-size images with two source
frames and their poses, the self-supervised trainer). Printed: images/s of each variant and its ratio to the plain
fp32 supervised loop measured in this run.

    python bench/bench_training.py [--config config/train_7scenes.yaml] [--rounds 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from depth_ros.checkpoints import network_size
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import pose_matrix
from depth_ros.learning.config import SelfSupervisedConfig, load_config
from depth_ros.learning.objectives import photometric_loss, supervised_loss
from depth_ros.learning.trainable import build_optimizer, build_training_model, prepare_trainable

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (objective, autocast dtype, channels_last)
    "silog plain fp32": ("silog", None, False),
    "silog channels_last": ("silog", None, True),
    "silog bf16 autocast": ("silog", torch.bfloat16, False),
    "silog bf16 + channels_last": ("silog", torch.bfloat16, True),
    "photometric plain fp32": ("photometric", None, False),
    "photometric bf16 autocast": ("photometric", torch.bfloat16, False),
}


def _batches(cfg, steps: int) -> dict[str, list[dict]]:
    size, batch = cfg.data.input_size, cfg.optim.batch_size
    height, width = network_size(480, 640, size)
    moves = torch.stack([torch.from_numpy(pose_matrix([x, 0, 0, 0, 0.02, 0])).float() for x in (-0.03, 0.03)])
    return {
        "silog": [{"image": torch.randn(batch, 3, size, size), "depth": torch.rand(batch, size, size) * 2.5 + 0.8}
                  for _ in range(steps)],
        "photometric": [{"image": torch.randn(batch, 3, height, width), "target": torch.rand(batch, 3, height, width),
                         "sources": torch.rand(batch, 2, 3, height, width),
                         "target_to_sources": moves.expand(batch, 2, 4, 4), "depth": torch.full((batch, height, width),
                                                                                               float("nan"))}
                        for _ in range(steps)],
    }


def _losses(cfg) -> dict:
    """Batch -> loss functions of the two trainers (the objectives' own code, without a dataset behind them)."""
    height, width = network_size(480, 640, cfg.data.input_size)
    camera = PinholeCamera(585, 585, 320, 240, 640, 480).resized(width, height)
    return {"silog": lambda model, batch, cl: supervised_loss(model, batch, cfg, cl)[0],
            "photometric": lambda model, batch, cl: photometric_loss(model, batch, camera, SelfSupervisedConfig(),
                                                                      channels_last=cl)[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config" / "train_7scenes.yaml"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant and round")
    args = parser.parse_args()
    cfg = load_config(args.config)
    torch.manual_seed(0)
    batches, losses = _batches(cfg, args.steps), _losses(cfg)

    runs = {}
    for name, (objective, dtype, channels_last) in VARIANTS.items():
        torch.manual_seed(0)
        model = build_training_model(cfg.model).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model, groups = prepare_trainable(model, cfg.optim)
        runs[name] = (objective, model, build_optimizer(groups, cfg.optim), dtype, channels_last)

    def step(name: str) -> None:
        objective, model, optimizer, dtype, channels_last = runs[name]
        for batch in batches[objective]:
            with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
                loss = losses[objective](model, batch, channels_last)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm or float("inf"))
            optimizer.step()
            optimizer.zero_grad()

    for name in runs:  # warm-up (allocator, oneDNN kernels)
        step(name)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            start = time.perf_counter()
            step(name)
            rates[name].append(args.steps * cfg.optim.batch_size / (time.perf_counter() - start))

    size = cfg.data.input_size
    print(f"training throughput, {cfg.model.encoder}, silog at {size}x{size} px crops, photometric at "
          f"{'x'.join(map(str, network_size(480, 640, size)))} px with 2 sources, batch {cfg.optim.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds x {args.steps} steps")
    base = statistics.median(rates["silog plain fp32"])
    photometric_base = statistics.median(rates["photometric plain fp32"])
    for name, values in rates.items():
        rate = statistics.median(values)
        own = f"   x{rate / photometric_base:.2f} vs photometric plain fp32" if name.startswith("photometric") else ""
        print(f"  {name:<28} {rate:7.2f} img/s   x{rate / base:.2f} vs silog plain fp32{own}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
