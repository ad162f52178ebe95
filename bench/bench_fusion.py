#!/usr/bin/env python3
"""Temporal fusion (depth_ros.fusion) on a posed sequence: accuracy, temporal consistency and cost, raw against fused,
measured in the same run on the same frames.

The checkpoint (default the bundled ``depth-ros-tiny-indoor``, which has a sigma head) predicts depth and sigma for
``--frames`` of the 7-Scenes RedKitchen TUM folder; :class:`depth_ros.fusion.TemporalFusion` fuses them with the
ground-truth camera poses (``groundtruth.txt``). Printed, raw and fused: AbsRel against the Kinect depth (0.1-5 m),
TAE (temporal alignment error: depth of frame t forward-warped with the true motion into frame t+1, mean
|warped - depth(t+1)| / depth(t+1) over the pixels both have, as Video Depth Anything's TAE with k = 1), and the time
of fusion against the time of inference (ratio). Not a test: a measurement on one scene.

    python bench/bench_fusion.py --frames 450:600
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TUM = REPO.parent / "shared" / "data" / "7scenes_redkitchen_odom" / "tum"


def tae(previous: np.ndarray, current: np.ndarray, camera, motion: np.ndarray) -> float:
    """Mean relative difference between ``previous`` warped by ``motion`` (T_current_previous) and ``current``."""
    from depth_ros.fusion import forward_warp

    warped, _ = forward_warp(previous, np.ones_like(previous), camera, motion)
    both = np.isfinite(warped) & np.isfinite(current)
    return float(np.mean(np.abs(warped[both] - current[both]) / current[both]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="depth-ros-tiny-indoor", help="checkpoint with a sigma head")
    parser.add_argument("--frames", default="450:600", help="frame range A:B of the sequence")
    args = parser.parse_args(argv)

    from depth_ros.data.frames import parse_frame_range
    from depth_ros.data.tum import TumRGBD
    from depth_ros.estimator import DepthEstimator
    from depth_ros.fusion import TemporalFusion
    from depth_ros.geometry.transform import PoseTrajectory, invert_transform
    from depth_ros.metrics import evaluate_depth

    sequence = TumRGBD(TUM)
    frames = [sequence[i] for i in parse_frame_range(args.frames, len(sequence))]
    poses = PoseTrajectory.from_tum_file(TUM / "groundtruth.txt").at(np.array([f.stamp for f in frames]))
    estimator = DepthEstimator.from_checkpoint(args.checkpoint, device="cpu")
    fusion = TemporalFusion()
    scores = {"raw": [], "fused": []}
    consistency = {"raw": [], "fused": []}
    previous, seconds = None, {"inference": 0.0, "fusion": 0.0}
    for frame, pose in zip(frames, poses, strict=True):
        start = time.perf_counter()
        depth, sigma = estimator.infer_with_sigma(frame.rgb, fx=frame.camera.fx)
        seconds["inference"] += time.perf_counter() - start
        start = time.perf_counter()
        fused, _ = fusion.update(depth, sigma, frame.camera, round(frame.stamp * 1e9), pose, args.checkpoint)
        seconds["fusion"] += time.perf_counter() - start
        outputs = {"raw": depth, "fused": fused}
        for name, out in outputs.items():
            scores[name].append(evaluate_depth(out, frame.depth, min_depth=0.1, max_depth=5.0)["abs_rel"])
            if previous is not None:
                motion = invert_transform(pose) @ previous[0]
                consistency[name].append(tae(previous[1][name], out, frame.camera, motion))
        previous = (pose, outputs)
    print(f"{len(frames)} frames of {args.frames}, {args.checkpoint}")
    for name in scores:
        print(f"{name:6s} AbsRel {np.mean(scores[name]):.4f}  TAE {np.mean(consistency[name]):.4f}")
    print(f"fused / raw: AbsRel {np.mean(scores['fused']) / np.mean(scores['raw']):.3f}, "
          f"TAE {np.mean(consistency['fused']) / np.mean(consistency['raw']):.3f}; "
          f"fusion time / inference time {seconds['fusion'] / seconds['inference']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
