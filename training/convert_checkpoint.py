#!/usr/bin/env python3
"""Convert a checkpoint to another file format, e.g. a training ``best.pth`` to ``.safetensors`` for shipping.

    python training/convert_checkpoint.py ../runs/packnet_tiny_supervised/best.pth \
        depth_ros/weights/depth-ros-tiny-indoor.safetensors

The weights are loaded as ``DepthEstimator`` would load them (:func:`depth_ros.checkpoints.build_model`: metadata
checked, keys matched strictly) and written atomically with the same metadata (:func:`save_checkpoint`; the format
follows the output name). Errors end in one ``convert_checkpoint: error: ...`` line and exit status 1.
"""

import argparse
import logging
import sys

from depth_ros.checkpoints import build_model, save_checkpoint
from depth_ros.tools.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert_checkpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="checkpoint file or model id")
    parser.add_argument("target", help="output file: .safetensors, or .pth")
    args = parser.parse_args(argv)

    def run() -> None:
        model, metadata = build_model(args.source)
        logging.getLogger("convert_checkpoint").info("wrote %s", save_checkpoint(args.target, model, metadata))

    return run_cli("convert_checkpoint", run)


if __name__ == "__main__":
    sys.exit(main())
