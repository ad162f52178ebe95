"""TSDF reconstruction: a synthetic scene of known geometry, skip-and-count, the occupancy projection, the pose
lookup shared with the self-supervised trainer, and the ``reconstruct`` CLI's bad inputs."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from depth_ros.data.poses import PoseSource, load_camera_trajectory
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import FREE, OCCUPIED, UNKNOWN
from depth_ros.geometry.transform import PoseTrajectory, pose_matrix, relative_pose
from depth_ros.mesh_metrics import mesh_metrics, mesh_points
from depth_ros.reconstruction import Fusion, TSDFOptions, levelled_frame, surface_occupancy
from depth_ros.tools import reconstruct as tool

BAG = "7scenes_redkitchen_odom/bag"
RGB_TOPIC = "/camera/color/image_raw/compressed"
DEPTH_TOPIC = "/camera/depth/image_raw/compressedDepth"
CAMERA = PinholeCamera(fx=60.0, fy=60.0, cx=40.0, cy=30.0, width=80, height=60)
# a corner of a room in a z-up world: the floor z = 0 and the wall x = 3 (unit normal n, offset d: n . p = d)
PLANES = [(np.array([0.0, 0.0, 1.0]), 0.0), (np.array([1.0, 0.0, 0.0]), 3.0)]


def camera_pose(x: float, y: float, height: float = 1.2, tilt: float = 0.35) -> np.ndarray:
    """T_world_camera of a camera at (x, y, height) looking along world +x, ``tilt`` rad down (optical frame of
    REP 103 in a z-up world of REP 105: z_opt = x, x_opt = -y, y_opt = -z when level)."""
    return pose_matrix([x, y, height, -np.pi / 2 - tilt, 0.0, -np.pi / 2])


def render_depth(pose: np.ndarray, camera: PinholeCamera = CAMERA) -> np.ndarray:
    """Exact depth (along the optical axis, m) of :data:`PLANES` seen from ``pose``; NaN where no plane is hit."""
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1)
    directions = rays @ pose[:3, :3].T  # world direction per unit of optical depth
    depth = np.full(u.shape, np.inf)
    for normal, offset in PLANES:
        with np.errstate(divide="ignore"):
            t = (offset - normal @ pose[:3, 3]) / (directions @ normal)
        depth = np.where((t > 0) & (t < depth), t, depth)
    return np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)


def distance_to_scene(points: np.ndarray) -> np.ndarray:
    return np.min([np.abs(points @ normal - offset) for normal, offset in PLANES], axis=0)


def test_synthetic_corner_is_reconstructed_within_one_voxel():
    options = TSDFOptions(voxel_size=0.02, truncation=0.06)
    fusion = Fusion(options)
    poses = [camera_pose(x, y) for x in (0.0, 0.1, 0.2) for y in (-0.1, 0.0, 0.1)]
    for pose in poses:
        assert fusion.add(render_depth(pose), CAMERA, pose) is None
    vertices = np.asarray(fusion.volume.mesh().vertices)
    assert len(vertices) > 1000
    assert distance_to_scene(vertices).max() < options.voxel_size
    on_wall = np.abs(vertices[:, 0] - 3.0) < options.voxel_size
    on_floor = np.abs(vertices[:, 2]) < options.voxel_size
    assert on_wall.sum() > 100 and on_floor.sum() > 100
    assert vertices[on_floor, 0].min() < 2.0  # the floor is seen from ~1.7 m ahead of the cameras up to the wall
    assert fusion.report.integrated == len(poses) and not fusion.report.skipped
    # the surface moved 3 cm off both planes is mostly beyond 2 cm and within 5 cm of the original
    points = mesh_points(fusion.volume.mesh())
    assert mesh_metrics(points, points)["fscore"] == 1.0
    shifted = points + [0.03, 0.0, 0.03]  # 3 cm off both planes
    assert mesh_metrics(shifted, points, threshold=0.02)["precision"] < 0.5
    assert mesh_metrics(shifted, points, threshold=0.05)["fscore"] > 0.95


def test_frames_without_pose_with_a_jump_of_another_size_or_beyond_memory_are_skipped_and_counted():
    fusion = Fusion(TSDFOptions(), max_jump_translation=0.3, max_jump_rotation=30.0)
    first, near, far = camera_pose(0.0, 0.0), camera_pose(0.1, 0.0), camera_pose(1.0, 0.0)
    assert fusion.add(render_depth(first), CAMERA, first) is None
    assert fusion.add(render_depth(near), CAMERA, None) == "no pose"
    small = PinholeCamera(fx=30.0, fy=30.0, cx=20.0, cy=15.0, width=40, height=30)
    assert fusion.add(render_depth(near, small), small, near) == "image size"
    assert fusion.add(render_depth(far), CAMERA, far) == "pose jump"  # 0.9 m from the last pose
    assert fusion.add(render_depth(far), CAMERA, far) is None  # the new pose is the reference from now on
    assert fusion.report.integrated == 2
    assert fusion.report.skipped == {"no pose": 1, "image size": 1, "pose jump": 1}
    assert len(fusion.report.poses) == 2
    full = Fusion(TSDFOptions(max_blocks=10))
    assert full.add(render_depth(first), CAMERA, first) == "volume full"
    assert full.volume.block_count == 0  # nothing was integrated


def test_surface_occupancy_follows_the_occupancy_grid_conventions():
    points = np.array([[0.02, 0.02, 0.0],   # floor -> free
                       [0.32, 0.12, 0.5],   # obstacle -> occupied
                       [0.32, 0.12, -0.1],  # floor under the obstacle: occupied wins
                       [0.52, 0.02, 2.5]])  # above the band: unknown
    grid, spec = surface_occupancy(points, 0.1, 0.05, 1.5, margin=0)
    assert (spec.origin_x, spec.origin_y, spec.width, spec.height) == (0.0, 0.0, 6, 2)
    assert grid.dtype == np.int8 and grid.shape == (2, 6)
    assert grid[0, 0] == FREE and grid[1, 3] == OCCUPIED and grid[0, 5] == UNKNOWN
    assert (grid == UNKNOWN).sum() == 12 - 2
    with pytest.raises(ValueError, match="no surface point"):
        surface_occupancy(np.full((3, 3), np.nan), 0.1, 0.05, 1.5)


def test_levelled_frame_puts_the_cameras_up_on_z_and_the_floor_at_zero():
    tilt = pose_matrix([0.0, 0.0, 0.0, 0.3, -0.2, 0.5])  # a world that is not gravity-aligned
    poses = np.array([tilt @ camera_pose(x, 0.0, tilt=0.0) for x in (0.0, 0.5)])  # level cameras
    floor = np.c_[np.random.default_rng(0).uniform(0, 3, (200, 2)), np.zeros(200), np.ones(200)] @ tilt.T
    level = levelled_frame(poses, floor[:, :3], floor_percentile=50)
    np.testing.assert_allclose(level[:3, :3] @ -poses[0, :3, 1], [0.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose((floor[:, :3] @ level[:3, :3].T + level[:3, 3])[:, 2], 0.0, atol=1e-9)


def arguments(shared_data, *extra: str) -> argparse.Namespace:
    return tool.parse_args([str(shared_data / BAG), "unused", "--rgb-topic", RGB_TOPIC, *extra])


def test_reconstruct_integrates_the_poses_of_load_camera_trajectory(shared_data):
    frames = range(450, 456)
    for extra in (["--pose-source", "odometry"], ["--pose-source", "tf", "--fixed-frame", "odom"]):
        args = arguments(shared_data, "--depth-topic", DEPTH_TOPIC, *extra)
        sequence, trajectory = tool.open_input(args)
        fusion = Fusion()
        tool.fuse(sequence, trajectory, fusion, None, frames, progress=False)
        expected = load_camera_trajectory(shared_data / BAG, PoseSource("odometry"), "camera_optical_frame")
        np.testing.assert_allclose(np.array(fusion.report.poses), expected.at(sequence.stamps[list(frames)]),
                                   atol=1e-6)
    truth = PoseTrajectory.from_tum_file(shared_data / "7scenes_redkitchen_odom/tum/groundtruth.txt")
    offsets = relative_pose(truth.at(sequence.stamps[list(frames)]), np.array(fusion.report.poses))
    assert np.abs(offsets[:, :3, 3]).max() < 1e-3  # the camera in odom is the ground-truth camera pose


def test_frames_outside_the_trajectory_are_counted_as_without_pose(shared_data):
    sequence, trajectory = tool.open_input(arguments(shared_data, "--depth-topic", DEPTH_TOPIC))
    stamps = sequence.stamps[450:453]
    partial = PoseTrajectory(stamps, trajectory.at(stamps), tolerance=0.0)
    fusion = Fusion()
    tool.fuse(sequence, partial, fusion, None, range(450, 456), progress=False)
    assert fusion.report.integrated == 3 and fusion.report.skipped == {"no pose": 3}


def run_reconstruct(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "depth_ros.tools.reconstruct", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("reconstruct: error:")]
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_inputs_end_in_one_line_and_leave_no_output(shared_data, tmp_path):
    bag, out = str(shared_data / BAG), tmp_path / "out"
    assert_one_line_error(run_reconstruct(bag, str(out), "--rgb-topic", RGB_TOPIC, "--depth-topic", "/no/depth"),
                          "no topic '/no/depth'")
    garbage = tmp_path / "broken.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + os.urandom(4096))
    assert_one_line_error(run_reconstruct(str(garbage), str(out), "--depth-topic", DEPTH_TOPIC), "broken.mcap")
    # Kinect depth starts at 0.8 m: nothing in 0.1-0.3 m, so every frame is skipped and the volume stays empty
    assert_one_line_error(run_reconstruct(bag, str(out), "--rgb-topic", RGB_TOPIC, "--depth-topic", DEPTH_TOPIC,
                                          "--frames", "450:453", "--max-depth", "0.3"), "3 no depth")
    assert list(tmp_path.iterdir()) == [garbage]  # no output, no staging folder left


def test_cli_writes_mesh_cloud_grid_and_summary(shared_data, tmp_path):
    out = tmp_path / "out"
    result = run_reconstruct(str(shared_data / BAG), str(out), "--rgb-topic", RGB_TOPIC, "--depth-topic",
                             DEPTH_TOPIC, "--frames", "450:480", "--stride", "3", "--level", "camera")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(tool.OUTPUT_FILES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["integrated"] == 10 and summary["skipped"] == {}
    assert mesh_points(out / "mesh.ply").shape[0] > 1000
    assert "resolution: 0.05" in (out / "occupancy.yaml").read_text()
