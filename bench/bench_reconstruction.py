#!/usr/bin/env python3
"""TSDF integration speed and memory at 640x480: depth_ros.reconstruction (open3d tensor VoxelBlockGrid) against
open3d's legacy ScalableTSDFVolume, measured in the same run on the same frames.

Loads ``--frames`` of the 7-Scenes RedKitchen TUM folder (sensor depth, colour, ground-truth poses) into memory,
then integrates them (colour included) with each volume, ``--repeats`` passes for the tensor volume (a fresh volume
each pass; the best pass counts) and one pass for the legacy one. Prints frames/s, the ratio tensor /
legacy and against the 30 frames/s target, the process RSS growth of each volume and the voxel memory; with
``--figure`` a small bar chart. Not a test: numbers depend on the machine and its load.

    python bench/bench_reconstruction.py --frames 450:600 --figure docs/figures/reconstruction_bench.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TUM = REPO.parent / "shared" / "data" / "7scenes_redkitchen_odom" / "tum"
TARGET_FPS = 30.0


def rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux /proc)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load(frames: str):
    from depth_ros.data.frames import parse_frame_range
    from depth_ros.data.tum import TumRGBD
    from depth_ros.geometry.transform import PoseTrajectory

    sequence = TumRGBD(TUM)
    indices = parse_frame_range(frames, len(sequence))
    trajectory = PoseTrajectory.from_tum_file(TUM / "groundtruth.txt")
    loaded = [sequence[i] for i in indices]
    return loaded, trajectory.at(np.array([f.stamp for f in loaded])), sequence.camera


def run_tensor(frames, poses, camera, options) -> tuple[float, float, object]:
    from depth_ros.reconstruction import TSDFVolume

    before = rss_mib()
    volume = TSDFVolume(options)
    start = time.perf_counter()
    for frame, pose in zip(frames, poses, strict=True):
        volume.integrate(frame.depth, camera, pose, frame.rgb)
    seconds = time.perf_counter() - start
    return len(frames) / seconds, rss_mib() - before, volume


def run_legacy(frames, poses, camera, options) -> tuple[float, float]:
    import open3d as o3d

    from depth_ros.geometry.transform import invert_transform

    integration = o3d.pipelines.integration
    before = rss_mib()
    volume = integration.ScalableTSDFVolume(voxel_length=options.voxel_size, sdf_trunc=options.truncation,
                                            color_type=integration.TSDFVolumeColorType.RGB8)
    intrinsic = o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, camera.fx, camera.fy, camera.cx,
                                                  camera.cy)
    start = time.perf_counter()
    for frame, pose in zip(frames, poses, strict=True):
        depth = np.nan_to_num(frame.depth, nan=0.0).astype(np.float32)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(frame.rgb), o3d.geometry.Image(depth), depth_scale=1.0,
            depth_trunc=options.max_depth, convert_rgb_to_intensity=False)
        volume.integrate(rgbd, intrinsic, invert_transform(pose))
    return len(frames) / (time.perf_counter() - start), rss_mib() - before


def figure(path: Path, tensor_fps: float, legacy_fps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.4), dpi=80)
    bars = ax.barh(["legacy ScalableTSDFVolume", "tensor VoxelBlockGrid"], [legacy_fps, tensor_fps],
                   color=["#999999", "#3070b0"])
    ax.axvline(TARGET_FPS, color="red", linestyle="--", label=f"target {TARGET_FPS:.0f} frames/s")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_xlabel("frames/s, 640x480 depth + colour, 2 cm voxels")
    ax.set_xlim(0, 1.15 * max(tensor_fps, legacy_fps, TARGET_FPS))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="450:600", help="frame range of the TUM folder (default: %(default)s)")
    parser.add_argument("--legacy-frames", type=int, help="first frames for the legacy volume (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="passes of the tensor volume (best counts)")
    parser.add_argument("--figure", type=Path, help="PNG bar chart to write")
    args = parser.parse_args()

    from depth_ros.reconstruction import TSDFOptions

    frames, poses, camera = load(args.frames)
    options = TSDFOptions()
    print(f"{len(frames)} frames {camera.width}x{camera.height}, voxel {options.voxel_size} m, truncation "
          f"{options.truncation} m, depth {options.min_depth}-{options.max_depth} m, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    runs = [run_tensor(frames, poses, camera, options) for _ in range(args.repeats)]
    tensor_fps, tensor_rss, volume = max(runs, key=lambda run: run[0])
    legacy = slice(args.legacy_frames)
    legacy_fps, legacy_rss = run_legacy(frames[legacy], poses[legacy], camera, options)
    print(f"tensor VoxelBlockGrid: {tensor_fps:.1f} frames/s (passes: "
          f"{', '.join(f'{run[0]:.1f}' for run in runs)}), RSS +{tensor_rss:.0f} MiB, {volume.block_count} blocks "
          f"= {volume.memory_bytes / 2**20:.1f} MiB of voxels")
    print(f"legacy ScalableTSDFVolume: {legacy_fps:.1f} frames/s ({len(frames[legacy])} frames), "
          f"RSS +{legacy_rss:.0f} MiB")
    print(f"ratio tensor / legacy: {tensor_fps / legacy_fps:.1f}x; tensor / target {TARGET_FPS:.0f} frames/s: "
          f"{tensor_fps / TARGET_FPS:.2f}")
    if args.figure:
        figure(args.figure, tensor_fps, legacy_fps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
