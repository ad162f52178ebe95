"""``reconstruct``: a bag or TUM-style folder -> TSDF mesh, coloured point cloud and 2-D occupancy grid.

Depth comes from a model (``--model``: any checkpoint or model id, run through depth_node's own pipeline, so the
depth is the metric, focal-corrected depth the node publishes) or from the recording (``--depth-topic`` of a bag,
or the ``depth/`` images of a TUM folder: the sensor depth, the reference). Camera poses come from
:func:`depth_ros.data.poses.load_camera_trajectory`, the lookup the self-supervised trainer and the adaptation use
(odometry x the ``/tf_static`` extrinsic, a pose topic, the TF tree, or a TUM ``groundtruth.txt``). The frames are
fused by :class:`depth_ros.reconstruction.Fusion` (open3d's tensor TSDF).

Writes a new folder ``OUTPUT`` with ``mesh.ply`` (triangle mesh, vertex colours, fixed frame), ``cloud.ply``
(coloured surface points, fixed frame), ``occupancy.pgm`` + ``occupancy.yaml`` (the grid projected from the surface,
in the map_server / Nav2 map_saver format: free white, occupied black, unknown grey, ``origin`` the lower-left
corner; see :func:`depth_ros.reconstruction.surface_occupancy`) and ``summary.json`` (frames, skips, times, memory,
``T_grid_fixed``: the transform of fixed-frame points into the grid frame).
The folder is written under a temporary name beside it and renamed when complete, so a killed run leaves nothing
under the final name. Frames without pose, with a pose jump, of another size or unreadable are skipped and counted.

Example (7-Scenes bag, frames 450-599, sensor depth)::

    reconstruct bag/ out_sensor --rgb-topic /camera/color/image_raw/compressed \
        --depth-topic /camera/depth/image_raw/compressedDepth --frames 450:600 --level camera
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from depth_ros.files import staged_folder
from depth_ros.tools.cli import run_cli

log = logging.getLogger(__name__)

DEFAULT_RGB_TOPIC = "/camera/color/image_raw"
OUTPUT_FILES = ("mesh.ply", "cloud.ply", "occupancy.pgm", "occupancy.yaml", "summary.json")


def open_input(args: argparse.Namespace):
    """``(sequence, trajectory)``: the frames (:class:`~depth_ros.data.frames.RGBDSequence`) and the camera
    trajectory of the input (ValueError / FileNotFoundError / BagError on bad input)."""
    from depth_ros.data.poses import PoseSource, load_camera_trajectory
    from depth_ros.data.rosbag import RosbagRGBD, is_bag
    from depth_ros.data.tum import TumRGBD, is_tum_folder

    path = Path(args.input)
    if is_tum_folder(path):
        sequence = TumRGBD(path)
        kind = args.pose_source or "tum"
    elif path.exists() and is_bag(path):
        if args.model is None and args.depth_topic is None:
            raise ValueError("give --model (depth from a network) or --depth-topic (a depth topic of the bag)")
        sequence = RosbagRGBD(path, rgb_topic=args.rgb_topic,
                              depth_topic=None if args.model else args.depth_topic, info_topic=args.info_topic)
        kind = args.pose_source or "odometry"
    else:
        raise FileNotFoundError(f"{path}: not a bag (rosbag2 folder, .mcap, .db3, .bag) or a TUM-format folder")
    source = PoseSource(kind, topic=args.pose_topic, fixed_frame=args.fixed_frame,
                        camera_to_base=args.camera_to_base)
    return sequence, load_camera_trajectory(path, source, camera_frame=sequence.frame_id)


def depth_pipeline(args: argparse.Namespace):
    """depth_node's :class:`~depth_ros.pipeline.DepthPipeline` for ``--model``, or None (recorded depth)."""
    if args.model is None:
        return None
    from depth_ros.estimator import DepthEstimator
    from depth_ros.pipeline import DepthPipeline

    estimator = DepthEstimator.from_checkpoint(args.model, device=args.device, input_size=args.input_size)
    return DepthPipeline(estimator, min_depth=args.min_depth, max_depth=args.max_depth)


def fuse(sequence, trajectory, fusion, pipeline, indices, progress: bool = True) -> float:
    """Feed the frames ``indices`` of ``sequence`` to ``fusion``; returns the seconds spent getting depth (the
    network, or decoding the recorded depth)."""
    stamps = sequence.stamps[list(indices)]
    covered = trajectory.covers(stamps)
    camera = sequence.camera
    depth_seconds = 0.0
    frames = tqdm(zip(indices, stamps, covered, strict=True), total=len(indices), desc="reconstruct", unit="frame",
                  disable=not progress)
    for index, stamp, has_pose in frames:
        if not has_pose:
            fusion.add(None, camera, None)
            continue
        start = time.perf_counter()
        try:
            frame = sequence[index]
        except ValueError as exc:
            log.warning("skipping frame %d: %s", index, exc)
            fusion.skip("unreadable")
            continue
        if frame.rgb.shape[:2] != (camera.height, camera.width):
            fusion.skip("image size")
            continue
        depth = frame.depth if pipeline is None else pipeline.run(frame.rgb, camera, want_cloud=False,
                                                                   want_grid=False).depth
        depth_seconds += time.perf_counter() - start
        fusion.add(depth, camera, trajectory.at(stamp), frame.rgb)
    return depth_seconds


def write_outputs(folder: Path, fusion, args: argparse.Namespace, summary: dict) -> None:
    """Mesh, cloud, occupancy map and summary of a finished fusion into ``folder`` (ValueError: empty volume)."""
    import open3d as o3d
    import yaml

    from depth_ros.geometry.transform import transform_points
    from depth_ros.reconstruction import levelled_frame, surface_occupancy
    from depth_ros.visualize import occupancy_image, save_image

    mesh = fusion.volume.mesh()
    if len(mesh.vertices) == 0:
        raise ValueError(f"empty volume: no surface after {fusion.report.line()}; check the depth (range "
                         f"{args.min_depth}-{args.max_depth} m) and the poses")
    cloud = fusion.volume.point_cloud()
    points = np.asarray(cloud.points)
    level = np.eye(4)
    if args.level == "camera":
        level = levelled_frame(np.array(fusion.report.poses), points)
        points = transform_points(level, points)
    grid, spec = surface_occupancy(points, args.grid_resolution, args.min_obstacle_height, args.max_obstacle_height)
    for name, ok in (("mesh.ply", o3d.io.write_triangle_mesh(str(folder / "mesh.ply"), mesh)),
                     ("cloud.ply", o3d.io.write_point_cloud(str(folder / "cloud.ply"), cloud))):
        if not ok:
            raise OSError(f"{folder / name}: could not write")
    save_image(folder / "occupancy.pgm", occupancy_image(grid))
    (folder / "occupancy.yaml").write_text(yaml.safe_dump({
        "image": "occupancy.pgm", "mode": "trinary", "resolution": float(spec.resolution),
        "origin": [float(spec.origin_x), float(spec.origin_y), 0.0], "negate": 0, "occupied_thresh": 0.65,
        "free_thresh": 0.25,
        "frame": "levelled fixed frame" if args.level == "camera" else "fixed frame"}))
    summary.update(vertices=len(mesh.vertices), triangles=len(mesh.triangles), points=len(points),
                   grid_cells=[spec.width, spec.height], T_grid_fixed=level.tolist())
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def reconstruct(args: argparse.Namespace, progress: bool = True) -> dict:
    """Run the whole tool (see the module docstring); returns the summary written to ``summary.json``.

    Raises:
        FileExistsError: the output exists.
        FileNotFoundError / BagError / ValueError: an unreadable input, a missing topic, no pose source, an empty
            volume. Nothing is left under the output's name.
        CheckpointError: the model cannot be loaded.
    """
    from depth_ros.data.frames import parse_frame_range
    from depth_ros.reconstruction import Fusion, TSDFOptions

    output = Path(args.output)
    if output.exists():
        raise FileExistsError(f"{output}: already exists; remove it or choose another output")
    if args.stride < 1:
        raise ValueError(f"--stride must be >= 1, got {args.stride}")
    options = TSDFOptions(voxel_size=args.voxel_size, truncation=args.truncation, min_depth=args.min_depth,
                          max_depth=args.max_depth, max_blocks=args.max_blocks)
    sequence, trajectory = open_input(args)
    pipeline = depth_pipeline(args)
    indices = parse_frame_range(args.frames, len(sequence))[::args.stride]
    fusion = Fusion(options, args.max_jump_translation, args.max_jump_rotation)
    start = time.perf_counter()
    depth_seconds = fuse(sequence, trajectory, fusion, pipeline, indices, progress)
    report, frames = fusion.report, max(fusion.report.integrated, 1)
    summary = {"input": str(args.input), "depth": args.model or "recorded", "frames_offered": len(indices),
               "integrated": report.integrated, "skipped": dict(report.skipped),
               "depth_ms_per_frame": 1e3 * depth_seconds / frames,
               "integration_ms_per_frame": 1e3 * report.integration_seconds / frames,
               "wall_seconds": time.perf_counter() - start, "voxel_blocks": fusion.volume.block_count,
               "voxel_mib": fusion.volume.memory_bytes / 2**20,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "options": vars(options) | {"stride": args.stride, "frames": args.frames}}
    log.info("%s", report.line())
    with staged_folder(output) as staging:
        staging.mkdir()
        write_outputs(staging, fusion, args, summary)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from depth_ros.data.poses import KINDS
    from depth_ros.pipeline import GridOptions
    from depth_ros.reconstruction import TSDFOptions

    defaults, grid = TSDFOptions(), GridOptions.__dataclass_fields__
    parser = argparse.ArgumentParser(prog="reconstruct", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="bag (rosbag2 folder, .mcap, .db3, ROS 1 .bag) or TUM-format folder")
    parser.add_argument("output", type=Path, help="output folder to create (mesh.ply, cloud.ply, occupancy.*)")
    depth = parser.add_argument_group("depth")
    depth.add_argument("--model", help="checkpoint file or model id: depth from the network (as depth_node)")
    depth.add_argument("--depth-topic", help="bag depth topic registered to the colour camera (sensor depth)")
    depth.add_argument("--rgb-topic", default=DEFAULT_RGB_TOPIC, help="bag colour topic (default: %(default)s)")
    depth.add_argument("--info-topic", help="its CameraInfo topic (default: camera_info beside it)")
    depth.add_argument("--input-size", type=int, help="network input short side (default: the checkpoint's)")
    depth.add_argument("--device", default="cpu", help="torch device for --model (default: %(default)s)")
    poses = parser.add_argument_group("poses (depth_ros.data.poses)")
    poses.add_argument("--pose-source", choices=KINDS, help="default: odometry for a bag, tum for a folder")
    poses.add_argument("--pose-topic", help="odometry / pose / TF topic (default: /odom, /tf)")
    poses.add_argument("--fixed-frame", help="fixed frame of the poses (required for tf, e.g. odom)")
    poses.add_argument("--camera-to-base", type=float, nargs=6, metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                       help="camera extrinsic in the base frame when the bag has no /tf_static chain")
    poses.add_argument("--max-jump-translation", type=float, default=0.3,
                       help="m between consecutive frames counted as a pose jump (default: %(default)s)")
    poses.add_argument("--max-jump-rotation", type=float, default=30.0,
                       help="degrees between consecutive frames counted as a pose jump (default: %(default)s)")
    volume = parser.add_argument_group("volume (depth_ros.reconstruction.TSDFOptions)")
    volume.add_argument("--frames", default=":", help="frame index range A:B (default: all)")
    volume.add_argument("--stride", type=int, default=1, help="use every n-th frame (default: %(default)s)")
    volume.add_argument("--voxel-size", type=float, default=defaults.voxel_size, help="m (default: %(default)s)")
    volume.add_argument("--truncation", type=float, default=defaults.truncation, help="m (default: %(default)s)")
    volume.add_argument("--min-depth", type=float, default=defaults.min_depth, help="m (default: %(default)s)")
    volume.add_argument("--max-depth", type=float, default=defaults.max_depth, help="m (default: %(default)s)")
    volume.add_argument("--max-blocks", type=int, default=defaults.max_blocks,
                        help="memory bound in voxel blocks of 10 KiB (default: %(default)s)")
    occupancy = parser.add_argument_group("occupancy grid")
    occupancy.add_argument("--grid-resolution", type=float, default=0.05, help="m (default: %(default)s)")
    occupancy.add_argument("--min-obstacle-height", type=float, default=grid["min_obstacle_height"].default,
                           help="m above the floor (default: %(default)s)")
    occupancy.add_argument("--max-obstacle-height", type=float, default=grid["max_obstacle_height"].default,
                           help="m above the floor (default: %(default)s)")
    occupancy.add_argument("--level", choices=("none", "camera"), default="none",
                           help="grid in the fixed frame's x-y plane (none, REP 105 z up) or levelled by the "
                                "cameras' mean up direction, floor at z = 0 (camera; e.g. a SLAM world frame)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("reconstruct", lambda: log.info("%s: %s", args.output, json.dumps(reconstruct(args)["skipped"])))


if __name__ == "__main__":
    sys.exit(main())
