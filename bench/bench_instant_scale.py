#!/usr/bin/env python3
"""Instant metric scale (depth_ros.scale_filter) on real frames, with exact and with noisy odometry.

Frames: 7-Scenes RedKitchen 450-599 of the 600-frame TUM folder (30 Hz, never trained on by the bundled model),
played back and forth (450 -> 599 -> 450 -> ...) for ``--seconds`` of driving at 30 Hz; the camera poses of
``groundtruth.txt`` are the odometry, exact or perturbed by :func:`depth_ros.tools.noisy_odometry.perturb_trajectory`
(the noisy_odometry tool's one implementation; yaw about the camera's up axis, optical -y). Depth: the bundled
``depth-ros-tiny-indoor`` through :class:`depth_ros.pipeline.DepthPipeline` (the published depth, focal correction
included) started 1.3x too far (the checkpoint's ``scale`` x 1.3). True factor: median over the frames of
median(true depth / published depth) per frame (the colour camera's 585 px focal, the sensor depth registered only
approximately). The images' focal length is the colour camera's 525 px (``--fx``), which the published depth's
focal correction uses too.

Printed (and written to ``--out`` as JSON): per odometry case the filter's converged factor (median over the last
third of the run), its ratio to the true factor (also at 10 s), the seconds of driving until it stays within 5 % of
its converged value and of the true factor, observation and
rejection counts; and the filter's time per frame against the network's, measured in this run. ``--plot`` writes
the factor over time of every case with the true factor.

    python bench/bench_instant_scale.py --seconds 30 --plot docs/figures/instant_scale.png
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TUM = REPO.parent / "shared" / "data" / "7scenes_redkitchen_odom" / "tum"
START_ERROR = 1.3  # the model starts 1.3x too far
RATE = 30.0  # Hz
# name -> (translation error, yaw-rate error in deg/s)
CASES = {"exact": (0.0, 0.0), "translation +3 %": (0.03, 0.0), "yaw rate 1 deg/s": (0.0, 1.0),
         "yaw rate 2 deg/s": (0.0, 2.0), "+3 % and 2 deg/s": (0.03, 2.0)}
COLOUR_FX = 525.0  # px: 7-Scenes' Kinect colour camera (camera-intrinsics.txt gives the depth camera's 585)
OPTICAL_UP = (0.0, -1.0, 0.0)  # the camera's up axis in its optical frame (REP 103: y down)


def load_frames(first: int, last: int, checkpoint: str, fx: float):
    """(gray images, published depth of the 1.3x start, true depth, poses, camera, network s/frame) of frames
    first..last, with the camera's focal length set to ``fx`` = fy px."""
    import cv2

    from depth_ros.data.tum import TumRGBD
    from depth_ros.estimator import DepthEstimator
    from depth_ros.geometry.transform import PoseTrajectory
    from depth_ros.pipeline import DepthPipeline

    sequence, trajectory = TumRGBD(TUM), PoseTrajectory.from_tum_file(TUM / "groundtruth.txt")
    camera = replace(sequence.camera, fx=fx, fy=fx)
    estimator = DepthEstimator.from_checkpoint(checkpoint, device="cpu")
    estimator.metadata = replace(estimator.metadata, scale=estimator.metadata.scale * START_ERROR)
    pipeline = DepthPipeline(estimator)
    grays, depths, truths, poses = [], [], [], []
    network = 0.0
    for index in range(first, last + 1):
        frame = sequence[index]
        start = time.perf_counter()
        depths.append(pipeline.run(frame.rgb, camera, want_cloud=False, want_grid=False).depth)
        network += time.perf_counter() - start
        grays.append(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY))
        truths.append(frame.depth)
        poses.append(trajectory.at(frame.stamp))
    return grays, depths, truths, np.stack(poses), camera, network / len(grays)


def true_factor(depths, truths) -> float:
    """Median over frames of the per-frame median true / published depth (valid pixels of both)."""
    ratios = []
    for depth, truth in zip(depths, truths, strict=True):
        valid = np.isfinite(depth) & np.isfinite(truth) & (truth > 0)
        ratios.append(np.median(truth[valid] / depth[valid]))
    return float(np.median(ratios))


def back_and_forth(count: int, steps: int) -> np.ndarray:
    """Frame indices 0..count-1..0.. for ``steps`` frames (a drive over the same ground, forward then back)."""
    cycle = np.r_[np.arange(count), np.arange(count - 2, 0, -1)]
    return np.resize(cycle, steps)


def run_case(grays, depths, poses, camera, order, translation_error, yaw_rate_error, seed):
    """The filter driven over ``order`` with perturbed poses: (stamps s, factors, counts, filter s/frame)."""
    from depth_ros.scale_filter import InstantScale
    from depth_ros.tools.noisy_odometry import perturb_trajectory

    stamps = np.arange(len(order)) / RATE
    odometry = perturb_trajectory(stamps, poses[order], translation_error, yaw_rate_error, seed, OPTICAL_UP)
    instant, factors, counts = InstantScale(), [], Counter()
    start = time.perf_counter()
    for step, index in enumerate(order):
        estimate = instant.update(grays[index], depths[index], camera, odometry[step], int(round(stamps[step] * 1e9)))
        factors.append(estimate.factor)
        counts[estimate.last_rejection or ("observation" if estimate.observation else "reference")] += 1
    return stamps, np.array(factors), counts, (time.perf_counter() - start) / len(order)


def settle_time(stamps, factors, target: float, tolerance: float = 0.05) -> float | None:
    """Seconds until ``factors`` stay within ``tolerance`` of ``target`` (None: not by the end)."""
    outside = np.flatnonzero(np.abs(factors / target - 1.0) > tolerance)
    if len(outside) == 0:
        return 0.0
    return None if outside[-1] == len(factors) - 1 else float(stamps[outside[-1] + 1])


def plot(path: Path, results: dict, truth: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, result in results.items():
        axes.plot(result["stamps"], result["factors"], label=name, linewidth=1.2)
    axes.axhline(truth, color="black", linestyle="--", label=f"true factor {truth:.3f}")
    axes.axhspan(truth * 0.95, truth * 1.05, color="grey", alpha=0.15, label="true +-5 %")
    axes.set(xlabel="seconds of driving (30 Hz frames)", ylabel="instant scale factor",
             title="Instant metric scale, tiny PackNet started 1.3x too far (7-Scenes RedKitchen 450-599)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="depth-ros-tiny-indoor")
    parser.add_argument("--first", type=int, default=450)
    parser.add_argument("--last", type=int, default=599)
    parser.add_argument("--fx", type=float, default=COLOUR_FX, help="focal length of the images, px (default: the "
                        "colour camera's %(default)s; the dataset's K holds the depth camera's 585)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of driving per case")
    parser.add_argument("--seeds", type=int, default=1, help="yaw-rate error seeds per noisy case")
    parser.add_argument("--out", type=Path, help="JSON result file")
    parser.add_argument("--plot", type=Path, help="PNG of the factor over time (seed 0)")
    args = parser.parse_args()

    grays, depths, truths, poses, camera, network_time = load_frames(args.first, args.last, args.checkpoint,
                                                                           args.fx)
    truth = true_factor(depths, truths)
    order = back_and_forth(len(grays), int(args.seconds * RATE))
    results, report, filter_times = {}, {}, []
    for name, (translation_error, yaw_rate_error) in CASES.items():
        seeds = range(args.seeds if yaw_rate_error else 1)
        rows = []
        for seed in seeds:
            stamps, factors, counts, seconds = run_case(grays, depths, poses, camera, order, translation_error,
                                                        yaw_rate_error, seed)
            filter_times.append(seconds)
            final = float(np.median(factors[-len(factors) // 3:]))  # converged: the last third's median
            rows.append({"seed": seed, "final factor": final, "final / true": final / truth,
                         "s to 5 % of final": settle_time(stamps, factors, final),
                         "final / true at 10 s": float(factors[int(10 * RATE)]) / truth,
                         "s to 5 % of true": settle_time(stamps, factors, truth), "frames": dict(counts)})
            if seed == 0:
                results[name] = {"stamps": stamps, "factors": factors}
        report[name] = rows
        for row in rows:
            print(f"{name:18s} seed {row['seed']}: factor {row['final factor']:.3f} = {row['final / true']:.3f} x "
                  f"true ({row['final / true at 10 s']:.3f} at 10 s); within 5 % of final after "
                  f"{row['s to 5 % of final']} s, of true after {row['s to 5 % of true']} s; "
                  f"{row['frames'].get('observation', 0)} observations")
    timing = {"network s/frame": network_time, "filter s/frame": float(np.mean(filter_times)),
              "filter / network": float(np.mean(filter_times)) / network_time}
    print(f"true factor {truth:.3f} (ideal 1/{START_ERROR} = {1 / START_ERROR:.3f}); filter "
          f"{1e3 * timing['filter s/frame']:.1f} ms/frame = {timing['filter / network']:.2f} x the network's "
          f"{1e3 * network_time:.1f} ms/frame")
    if args.plot:
        plot(args.plot, results, truth)
    if args.out:
        args.out.write_text(json.dumps({"true factor": truth, "cases": report, "timing": timing,
                                        "frames": [args.first, args.last], "seconds": args.seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
