#!/usr/bin/env python3
"""Sigma gating and the occupancy grid: false-occupied cells of grids from predicted depth, ungated and gated at
``max_relative_sigma``, against the grid from the sensor's depth, on the same frames in the same run.

For each of ``--frames`` (every ``--every``-th) of the 7-Scenes RedKitchen TUM folder, the checkpoint (default the
bundled ``depth-ros-tiny-indoor``, which has a sigma head) predicts depth and sigma; the pipeline's own grid code
(:meth:`depth_ros.pipeline.DepthPipeline.grid`, default grid options, the camera at depth_node's default
``camera_to_base``) makes four grids from the pixels where the sensor has depth: from the sensor's depth, from the
prediction, from the prediction after :func:`depth_ros.pipeline.sigma_gate`, and from a baseline gate that keeps as
many pixels, the nearest ones (sigma proportional to depth). A false-occupied cell is occupied in
a predicted grid but not in the sensor's; a missed cell the reverse. Prints the mean counts per frame and the
ratio gated / ungated. Not a test: a measurement on one scene.

    python bench/bench_uncertainty_grid.py --frames 450:600 --max-relative-sigma 0.12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TUM = REPO.parent / "shared" / "data" / "7scenes_redkitchen_odom" / "tum"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="depth-ros-tiny-indoor", help="checkpoint with a sigma head")
    parser.add_argument("--frames", default="450:600", help="frame range A:B of the sequence")
    parser.add_argument("--every", type=int, default=3, help="use every N-th frame of the range")
    parser.add_argument("--max-relative-sigma", type=float, default=0.12, help="the gate (sigma / depth)")
    args = parser.parse_args(argv)

    from depth_ros.data import open_rgbd, parse_frame_range
    from depth_ros.geometry.occupancy import OCCUPIED
    from depth_ros.geometry.transform import pose_matrix
    from depth_ros.pipeline import DepthPipeline, sigma_gate
    from depth_ros.ros.params import DEFAULT_CAMERA_TO_BASE, NodeConfig

    source = open_rgbd(str(TUM), depth_scale=1000)
    pipeline = DepthPipeline.from_config(NodeConfig.from_values({"checkpoint": args.checkpoint, "device": "cpu"}))
    if not pipeline.estimator.has_uncertainty:
        print(f"{args.checkpoint} has no sigma head", file=sys.stderr)
        return 1
    pose = pose_matrix(DEFAULT_CAMERA_TO_BASE)
    counts = {"ungated": [], "gated": [], "nearest": []}
    for index in parse_frame_range(args.frames, len(source))[::args.every]:
        frame = source[index]
        depth, sigma = pipeline.estimator.infer_with_sigma(frame.rgb, fx=frame.camera.fx)
        sensed = np.isfinite(frame.depth) & (frame.depth > 0)
        depth = np.where(sensed, depth, np.nan).astype(np.float32)
        gated = sigma_gate(depth, sigma, args.max_relative_sigma)
        kept = np.isfinite(gated).sum() / max(1, np.isfinite(depth).sum())
        limit = np.nanquantile(depth, kept) if kept > 0 else -np.inf
        nearest = np.where(depth <= limit, depth, np.nan).astype(np.float32)
        occupied = {name: pipeline.grid(pipeline.points(d, frame.camera), pose) == OCCUPIED for name, d in (
            ("sensor", np.where(sensed, frame.depth, np.nan).astype(np.float32)), ("ungated", depth),
            ("gated", gated), ("nearest", nearest))}
        for name in counts:
            counts[name].append(((occupied[name] & ~occupied["sensor"]).sum(),
                                 (occupied["sensor"] & ~occupied[name]).sum(), occupied[name].sum()))
    mean = {name: np.mean(rows, axis=0) for name, rows in counts.items()}
    print(f"{len(counts['gated'])} frames of {args.frames}, max_relative_sigma {args.max_relative_sigma}")
    for name, (false, missed, total) in mean.items():
        print(f"{name:8s} occupied {total:7.1f}  false-occupied {false:7.1f}  missed {missed:7.1f} (cells per frame)")
    print(f"gated / ungated: false-occupied {mean['gated'][0] / mean['ungated'][0]:.2f}, "
          f"missed {mean['gated'][1] / mean['ungated'][1]:.2f}; nearest-pixels baseline / ungated: false-occupied "
          f"{mean['nearest'][0] / mean['ungated'][0]:.2f}, missed {mean['nearest'][1] / mean['ungated'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
