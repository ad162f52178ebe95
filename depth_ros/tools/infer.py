"""``infer``: metric depth for image files or folders.

Writes, per image, ``<stem>_depth.npy`` (HxW float32 metres, NaN-free network output), ``<stem>_depth.png``
(colourised) and, with ``--ply`` and intrinsics, ``<stem>.ply`` (points in the camera optical frame, coloured).
Two inputs with the same stem are refused before anything runs (their outputs would overwrite each other). An image
that cannot be used (unreadable, larger than ``--max-pixels`` read from its header, too small for the network) is
reported and skipped; the others are processed, and the exit status is then 1 naming each skipped image.

Example::

    infer photo.jpg frames/ --checkpoint da2-metric-indoor-small --fx 585 --ply --out depth_out/
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from depth_ros.backends import BACKENDS
from depth_ros.checkpoints import DEFAULT_MODEL
from depth_ros.data.images import MAX_IMAGE_PIXELS, read_image
from depth_ros.files import atomic_write
from depth_ros.tools.cli import Skipped, run_cli

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders of images")
    parser.add_argument("--checkpoint", default=DEFAULT_MODEL,
                        help="checkpoint file, official model id or transformers model (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("depth_out"), help="output folder (default: %(default)s)")
    parser.add_argument("--input-size", type=int,
                        help="network short side, multiple of 14 (32 for PackNet); default: the checkpoint's "
                             "training size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="network runtime (default: %(default)s); others are checked against torch first")
    parser.add_argument("--backend-model", help="ONNX file from depth_ros_export (default: exported to the cache)")
    parser.add_argument("--fx", type=float, help="focal length x in pixels (image resolution)")
    parser.add_argument("--fy", type=float, help="focal length y in pixels (default: fx)")
    parser.add_argument("--cx", type=float, help="principal point x in pixels (default: image centre)")
    parser.add_argument("--cy", type=float, help="principal point y in pixels (default: image centre)")
    parser.add_argument("--no-focal-correction", action="store_true",
                        help="do not rescale metric depth by fx / training focal length")
    parser.add_argument("--ply", action="store_true", help="also write a coloured .ply cloud (needs --fx)")
    parser.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help="largest width x height of an input image, read from its header (default: %(default)s, "
                             "depth_node's max_image_pixels)")
    args = parser.parse_args(argv)
    for name in ("fx", "fy"):  # refused whatever the model: one whose output ignores fx would accept them silently
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f"--{name} must be a finite positive number of pixels, got {value}")
    if args.ply and args.fx is None:
        parser.error("--ply needs the intrinsics: give at least --fx")
    return args


def list_images(inputs: list[Path]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders.

    Raises:
        ValueError: a path that does not exist, no images at all, or two images with the same stem (their outputs
            would have the same names).
    """
    images = []
    for path in inputs:
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    if not images:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(map(str, inputs))}")
    by_stem: dict[str, Path] = {}
    for image in images:
        if (other := by_stem.setdefault(image.stem, image)) != image:
            raise ValueError(f"{other} and {image} would both write {image.stem}_depth.npy: rename one or run them "
                             "with different --out folders")
    return images


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        from depth_ros.estimator import DepthEstimator
        from depth_ros.geometry.camera import PinholeCamera
        from depth_ros.visualize import colorize_depth, save_image, save_ply

        images = list_images(args.inputs)
        estimator = DepthEstimator.from_checkpoint(
            args.checkpoint, device=args.device, precision=args.precision, input_size=args.input_size,
            focal_correction=not args.no_focal_correction, backend=args.backend, backend_model=args.backend_model)
        args.out.mkdir(parents=True, exist_ok=True)
        skipped = Skipped("image")
        for path in tqdm(images, desc="infer", unit="img"):
            try:
                rgb = read_image(path, args.max_pixels)  # its errors name the file
                try:
                    depth = estimator.infer(rgb, fx=args.fx)
                except ValueError as exc:  # e.g. an image smaller than one network patch
                    raise ValueError(f"{path}: {exc}") from exc
            except (OSError, ValueError) as exc:
                skipped.add(str(exc))
                continue
            with atomic_write(args.out / f"{path.stem}_depth.npy") as tmp:
                np.save(tmp, depth)
            save_image(args.out / f"{path.stem}_depth.png", colorize_depth(depth))
            if args.ply:
                height, width = depth.shape
                camera = PinholeCamera(
                    fx=args.fx, fy=args.fy or args.fx,
                    cx=(width - 1) / 2 if args.cx is None else args.cx,
                    cy=(height - 1) / 2 if args.cy is None else args.cy, width=width, height=height)
                save_ply(args.out / f"{path.stem}.ply", camera.backproject(depth).reshape(-1, 3), rgb.reshape(-1, 3))
        skipped.check(len(images), args.out)

    return run_cli("infer", run)


if __name__ == "__main__":
    sys.exit(main())
