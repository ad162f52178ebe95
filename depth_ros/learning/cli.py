"""Command line of both trainers (``training/train_supervised.py``, ``training/train_self_supervised.py``)."""

from __future__ import annotations

import argparse
import logging

from depth_ros.learning.config import load_config
from depth_ros.learning.engine import NonFiniteLossError, short_metrics, train
from depth_ros.tools.cli import run_cli

DESCRIPTIONS = {
    "silog": "Supervised metric depth training (SiLog on depth labels) with Accelerate.",
    "photometric": "Self-supervised metric depth training from posed images (photometric view synthesis, no "
                   "depth labels) with Accelerate.",
}


def main(argv: list[str] | None, objective: str, name: str) -> int:
    """Parse ``--config``, ``--set``, ``--resume``, ``--stop-after-steps``, train, print the summary; errors exit 1
    with one line (:func:`depth_ros.tools.cli.run_cli`)."""
    parser = argparse.ArgumentParser(prog=name, description=DESCRIPTIONS[objective])
    parser.add_argument("--config", required=True, help="training YAML (see config/)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (YAML), e.g. --set data.depth_scale=769.23; repeatable")
    parser.add_argument("--resume", action="store_true", help="continue from the newest saved state")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="save the state and stop after this many optimiser steps (resume later)")
    args = parser.parse_args(argv)
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        parser.error(f"--stop-after-steps must be >= 1, got {args.stop_after_steps}")

    def run() -> int:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("accelerate").setLevel(logging.WARNING)
        cfg = load_config(args.config, args.set)
        try:
            summary = train(cfg, objective, resume=args.resume, stop_after_steps=args.stop_after_steps,
                            show_progress=True)
        except NonFiniteLossError as exc:
            raise ValueError(str(exc)) from None
        for key in ("baseline_gt_median", "before", "best", "final"):
            if key in summary:
                print(f"{key:>18}: {short_metrics(summary[key])}")
        print(f"best checkpoint: {summary['checkpoint']}")
        return 0

    return run_cli(name, run)
