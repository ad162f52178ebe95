"""DepthPipeline (no ROS): stage wiring, output scaling, validity range, cloud layout and exact grid cells."""

import math
import types

import numpy as np
import pytest
import torch

from depth_ros.checkpoints import CheckpointMetadata
from depth_ros.estimator import DepthEstimator
from depth_ros.geometry.camera import PinholeCamera, check_camera_matches
from depth_ros.geometry.occupancy import FREE, OCCUPIED, UNKNOWN, GridSpec
from depth_ros.geometry.pointcloud import unpack_rgb
from depth_ros.geometry.transform import OPTICAL_TO_BODY, pose_matrix
from depth_ros.models import DepthAnythingV2
from depth_ros.pipeline import CloudOptions, DepthPipeline, GridOptions
from depth_ros.ros.params import DEFAULT_CAMERA_TO_BASE, NodeConfig

# A 7-Scenes-like camera (Kinect, 640x480, f = 585 px) and a grid 10 m x 10 m at 5 cm with the robot at its left
# edge, as depth.yaml's defaults.
CAMERA = PinholeCamera(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)
SPEC = GridSpec(resolution=0.05, width=200, height=200, origin_x=0.0, origin_y=-5.0)


@pytest.fixture(scope="module")
def estimator() -> DepthEstimator:
    torch.manual_seed(0)
    model = DepthAnythingV2("vits", "metric", 20.0)
    return DepthEstimator(model, CheckpointMetadata("vits", "metric", 20.0, 518, 500.0), device="cpu", input_size=70)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def small_camera() -> PinholeCamera:
    return CAMERA.resized(128, 96)


def test_run_times_every_stage_and_scales_the_output(estimator, rgb):
    pipeline = DepthPipeline(estimator, min_depth=0.0, max_depth=100.0, output_scale=0.5,
                             grid=GridOptions(SPEC))
    out = pipeline.run(rgb, small_camera(), pose_matrix(DEFAULT_CAMERA_TO_BASE))
    assert out.depth.shape == out.prediction.shape == (48, 64) and out.depth.dtype == np.float32
    assert out.camera == small_camera().resized(64, 48)
    assert out.cloud.shape == (48, 64) and out.grid.shape == (200, 200) and out.grid.dtype == np.int8
    assert set(out.timings) == {"preprocess", "inference", "postprocess", "cloud", "grid"}
    assert all(t > 0 for t in out.timings.values())
    # The depth is the estimator's own answer at the output size with the output camera's focal length.
    expected = estimator.postprocess(estimator.forward(estimator.preprocess(rgb)), (48, 64), out.camera.fx)
    np.testing.assert_allclose(out.prediction, expected, rtol=1e-6)


def test_depth_outside_the_range_is_nan(estimator, rgb):
    pipeline = DepthPipeline(estimator, min_depth=0.0, max_depth=100.0)
    raw = pipeline.infer(pipeline.preprocess(rgb))
    prediction = pipeline.postprocess(raw, rgb.shape[:2])[1]
    low, high = np.quantile(prediction, [0.25, 0.75])
    pipeline = DepthPipeline(estimator, min_depth=float(low), max_depth=float(high))
    depth, again, camera = pipeline.postprocess(raw, rgb.shape[:2])
    assert camera is None and np.array_equal(again, prediction)
    inside = (prediction >= low) & (prediction <= high)
    assert 0.4 < inside.mean() < 0.6
    assert np.array_equal(np.isnan(depth), ~inside) and np.array_equal(depth[inside], prediction[inside])


def test_without_camera_only_depth_is_made(estimator, rgb):
    out = DepthPipeline(estimator, grid=GridOptions(SPEC)).run(rgb, None, np.eye(4))
    assert out.camera is None and out.cloud is None and out.grid is None
    assert set(out.timings) == {"preprocess", "inference", "postprocess"}


def test_cloud_is_the_back_projection_of_the_published_depth(estimator, rgb):
    pipeline = DepthPipeline(estimator, min_depth=0.0, max_depth=100.0, cloud=CloudOptions(colored=True))
    out = pipeline.run(rgb, small_camera(), want_grid=False)
    expected = small_camera().backproject(out.depth)
    for axis, name in enumerate("xyz"):
        np.testing.assert_array_equal(out.cloud[name], expected[..., axis])
    np.testing.assert_array_equal(unpack_rgb(out.cloud["rgb"]), rgb)

    dense = DepthPipeline(estimator, cloud=CloudOptions(organised=False, stride=2, max_range=3.0))
    cloud = dense.run(rgb, small_camera(), want_grid=False).cloud
    assert cloud.ndim == 1 and cloud.dtype.names == ("x", "y", "z") and len(cloud) <= 48 * 64
    assert not np.isnan(cloud["z"]).any() and (cloud["x"] ** 2 + cloud["y"] ** 2 + cloud["z"] ** 2 <= 9.0001).all()


def test_camera_of_another_size_is_refused(estimator, rgb):
    with pytest.raises(ValueError, match=r"CameraInfo describes a 640x480 image .* but the image is 128x96"):
        DepthPipeline(estimator).run(rgb, CAMERA)
    check_camera_matches(CAMERA, 480, 640)


def test_relative_models_are_refused():
    with pytest.raises(ValueError, match="relative"):
        DepthPipeline(types.SimpleNamespace(is_metric=False))


def test_default_pose_is_the_optical_frame_half_a_metre_up_looking_forward():
    pose = pose_matrix(DEFAULT_CAMERA_TO_BASE)
    np.testing.assert_allclose(pose[:3, :3], OPTICAL_TO_BODY[:3, :3], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], (0.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="6 finite numbers"):
        pose_matrix([0.0, 0.0, math.nan, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("pose", "occupied_rows", "occupied_cols", "free_cell", "unknown_cells"),
    [
        # Looking along +x from (0, 0, 0.5): a wall 2.025 m ahead spans y = -1.104..+1.108 m -> column 40,
        # rows 77..122. In front of it is free, behind it and outside the field of view unknown.
        (DEFAULT_CAMERA_TO_BASE, range(77, 123), [40], (100, 20), [(100, 60), (150, 20)]),
        # Yawed to look along +y: the wall is the row y = 2.025 m (row 140) for x = -1.108..+1.104 m; only
        # x >= 0 lies on the grid -> columns 0..22.
        ((0.0, 0.0, 0.5, -math.pi / 2, 0.0, 0.0), [140], range(0, 23), (120, 5), [(160, 5), (120, 60)]),
    ],
)
def test_grid_marks_the_exact_cells_of_a_wall(estimator, pose, occupied_rows, occupied_cols, free_cell,
                                              unknown_cells):
    pipeline = DepthPipeline(estimator, grid=GridOptions(SPEC, min_obstacle_height=0.05, max_obstacle_height=1.5,
                                                         max_range=5.0))
    wall = np.full((CAMERA.height, CAMERA.width), 2.025, dtype=np.float32)  # fronto-parallel plane z = 2.025 m
    grid = pipeline.grid(pipeline.points(wall, CAMERA), pose_matrix(pose))
    expected = {(row, col) for row in occupied_rows for col in occupied_cols}
    assert {tuple(cell) for cell in np.argwhere(grid == OCCUPIED)} == expected
    assert grid[free_cell] == FREE
    assert all(grid[cell] == UNKNOWN for cell in unknown_cells)


def test_from_config_maps_the_node_parameters(estimator):
    config = NodeConfig.from_values({
        "min_depth": 0.3, "max_depth": 6.0, "output_scale": 0.5, "cloud_organized": False, "cloud_stride": 2,
        "colored": True, "voxel_size": 0.02, "cloud_max_range": 4.0, "grid_resolution": 0.1, "grid_size_x": 8.0,
        "grid_size_y": 6.0, "grid_origin_x": -1.0, "grid_origin_y": -3.0, "min_obstacle_height": 0.1,
        "max_obstacle_height": 1.0, "grid_max_range": 3.0})
    pipeline = DepthPipeline.from_config(config, estimator)
    assert (pipeline.min_depth, pipeline.max_depth, pipeline.output_scale) == (0.3, 6.0, 0.5)
    assert pipeline.cloud_options == CloudOptions(organised=False, stride=2, colored=True, max_range=4.0,
                                                  voxel_size=0.02)
    assert pipeline.grid_options == GridOptions(GridSpec(0.1, 80, 60, -1.0, -3.0), 0.1, 1.0, 3.0)
    defaults = DepthPipeline.from_config(NodeConfig(), estimator)
    assert defaults.cloud_options == CloudOptions() and defaults.grid_options.spec == SPEC


def test_from_config_builds_the_estimator_from_the_model_parameters(tmp_path):
    from depth_ros.checkpoints import save_checkpoint
    from depth_ros.models import DepthAnythingV2

    path = save_checkpoint(tmp_path / "m.pth", DepthAnythingV2("vits"), CheckpointMetadata("vits", "metric", 8.0, 84))
    config = NodeConfig.from_values({"checkpoint": str(path), "device": "cpu", "precision": "bf16",
                                     "torch_compile": True, "focal_correction": False, "model_max_depth": 6.0})
    estimator = DepthPipeline.from_config(config).estimator
    assert (estimator.input_size, estimator.precision, estimator.focal_correction) == (84, "bf16", False)
    assert estimator.model.max_depth == 6.0 and estimator._forward_module is not estimator.model  # compiled
    explicit = DepthPipeline.from_config(NodeConfig.from_values({"checkpoint": str(path), "input_size": 140}))
    assert explicit.estimator.input_size == 140
