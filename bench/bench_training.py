#!/usr/bin/env python3
"""Training throughput (images/s) at the configured input size: optimised loops against a plain fp32 loop.

Every variant runs the trainer's own step (``training_loss``: forward, SiLog on valid pixels; backward; gradient
clipping; AdamW with the encoder/head groups) on the same random batches, in interleaved rounds so that load from
other processes affects all variants alike; the median round counts. Printed: images/s of each variant and its
ratio to the plain fp32 loop measured in this run.

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

from depth_ros import supervised as trainer

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (autocast dtype, channels_last)
    "plain fp32": (None, False),
    "channels_last": (None, True),
    "bf16 autocast": (torch.bfloat16, False),
    "bf16 autocast + channels_last": (torch.bfloat16, True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config" / "train_7scenes.yaml"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant and round")
    args = parser.parse_args()
    cfg = trainer.load_config(args.config)
    size, batch_size = cfg.data.input_size, cfg.optim.batch_size
    torch.manual_seed(0)
    batches = [{"image": torch.randn(batch_size, 3, size, size),
                "depth": torch.rand(batch_size, size, size) * 2.5 + 0.8} for _ in range(args.steps)]

    runs = {}
    for name, (dtype, channels_last) in VARIANTS.items():
        torch.manual_seed(0)
        model = trainer.build_training_model(cfg.model).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        runs[name] = (model, trainer.build_optimizer(model, cfg.optim), dtype, channels_last)

    def step(name: str) -> None:
        model, optimizer, dtype, channels_last = runs[name]
        for batch in batches:
            with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
                loss = trainer.training_loss(model, batch, cfg.data.min_depth, cfg.max_depth, channels_last)
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
            rates[name].append(args.steps * batch_size / (time.perf_counter() - start))

    print(f"training throughput, {cfg.model.encoder} at {size}x{size} px, batch {batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds x {args.steps} steps")
    base = statistics.median(rates["plain fp32"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"  {name:<32} {rate:7.2f} img/s   x{rate / base:.2f} vs plain fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
