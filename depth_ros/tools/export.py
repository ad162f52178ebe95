"""``depth_ros_export``: write a checkpoint's network as ONNX for the onnxruntime / openvino / tensorrt backends.

The file takes the network input of one camera size (``--image-size``, default 640x480, at ``--input-size``, default
the checkpoint's training size: depth_node's input for that camera) or, PackNet only, any size (``--dynamic``). The
checkpoint's metadata (architecture, encoder, head, max depth, input size, training focal) and the preprocessing
(size rule, mean, std) are stored in the ONNX ``metadata_props``. Give the file to depth_node as ``backend_model``
(or ``infer --backend-model``); it is checked against the checkpoint at start-up.

Example::

    depth_ros_export da2-metric-indoor-small da2_small_640x480.onnx --image-size 640x480
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from depth_ros.tools.cli import run_cli

log = logging.getLogger(__name__)


def image_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (px) -> ``(height, width)``; argparse type."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 640x480, got {text!r}") from None
    if min(width, height) <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return height, width


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="depth_ros_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint file or official model id")
    parser.add_argument("output", type=Path, help="ONNX file to write")
    parser.add_argument("--input-size", type=int,
                        help="network short side in px (multiple of 14, 32 for PackNet); default: the checkpoint's")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--image-size", type=image_size, default=(480, 640),
                       help="camera image WIDTHxHEIGHT the file is for (default: 640x480)")
    shape.add_argument("--dynamic", action="store_true", help="any input height/width (PackNet only)")
    parser.add_argument("--encoder", help="override of the checkpoint's encoder")
    parser.add_argument("--max-depth", type=float, help="override of the metric head's range in m")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        from depth_ros.backends import export_onnx
        from depth_ros.checkpoints import build_model

        model, metadata = build_model(args.checkpoint, encoder=args.encoder, max_depth=args.max_depth)
        shape = None if args.dynamic else metadata.preprocessing.network_size(
            *args.image_size, args.input_size or metadata.input_size)
        export_onnx(model, metadata, args.output, shape)
        size = "dynamic height/width" if shape is None else f"{shape[0]}x{shape[1]} network input"
        log.info("wrote %s (%s, %s %s)", args.output, size, metadata.architecture, metadata.encoder)

    return run_cli("depth_ros_export", run)


if __name__ == "__main__":
    sys.exit(main())
