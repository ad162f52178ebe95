"""Geometry: pinhole camera, rigid transforms, point-cloud layout and occupancy grid."""

import math

import cv2
import numpy as np
import pytest
import torch
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import GridSpec, occupancy_grid
from depth_ros.geometry.pointcloud import XYZ_DTYPE, XYZRGB_DTYPE, build_cloud, pack_rgb, unpack_rgb
from depth_ros.geometry.transform import OPTICAL_TO_BODY, invert_transform, transform_matrix, transform_points

# TUM fr3 intrinsics (../shared/data/tum_fr3_single/README.txt)
TUM = PinholeCamera(fx=535.4, fy=539.2, cx=320.1, cy=247.6, width=640, height=480)


@pytest.fixture(scope="module")
def tum_depth(shared_data) -> np.ndarray:
    """The real TUM fr3 depth frame in metres (uint16 / 5000), NaN where the sensor gave 0."""
    raw = cv2.imread(str(shared_data / "tum_fr3_single" / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    depth = raw.astype(np.float32) / 5000.0
    depth[raw == 0] = np.nan
    return depth


def camera_info(k, p, width=640, height=480, binning=(0, 0), roi=(0, 0, 0, 0)) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, k=k, p=p, binning_x=binning[0], binning_y=binning[1])
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    return msg


K_RAW = [500.0, 0.0, 310.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0]
P_RECT = [480.0, 0.0, 322.0, 0.0, 0.0, 482.0, 244.0, 0.0, 0.0, 0.0, 1.0, 0.0]


# ---------------------------------------------------------------- camera


def test_backproject_then_project_returns_pixels_and_depth(tum_depth):
    points = TUM.backproject(tum_depth)
    assert points.shape == (480, 640, 3) and points.dtype == np.float32
    invalid = np.isnan(tum_depth)
    assert invalid.any() and np.isnan(points[invalid]).all()
    uv, z = TUM.project(points[~invalid])
    rows, cols = np.nonzero(~invalid)
    np.testing.assert_allclose(uv, np.stack((cols, rows), axis=1), atol=2e-3)
    np.testing.assert_array_equal(z, tum_depth[~invalid])


def test_backproject_of_a_known_plane_lies_on_it():
    # plane n . X = d seen by the camera: along the ray r(u, v) = ((u-cx)/fx, (v-cy)/fy, 1), Z = d / (n . r)
    normal, offset = np.array([0.1, -0.6, 0.8]), 1.5
    normal /= np.linalg.norm(normal)
    v, u = np.mgrid[: TUM.height, : TUM.width]
    ray_dot = normal[0] * (u - TUM.cx) / TUM.fx + normal[1] * (v - TUM.cy) / TUM.fy + normal[2]
    depth = (offset / ray_dot).astype(np.float32)
    points = TUM.backproject(depth)
    np.testing.assert_allclose(points.reshape(-1, 3) @ normal, offset, rtol=1e-5)
    # a fronto-parallel plane at 2 m: the corner pixel (0, 0) is at ((0 - cx) / fx * 2, (0 - cy) / fy * 2, 2)
    flat = TUM.backproject(np.full((480, 640), 2.0, np.float32))
    np.testing.assert_allclose(flat[0, 0], [-320.1 / 535.4 * 2, -247.6 / 539.2 * 2, 2.0], rtol=1e-6)
    np.testing.assert_allclose(flat[479, 639], [(639 - 320.1) / 535.4 * 2, (479 - 247.6) / 539.2 * 2, 2.0], rtol=1e-6)


def test_backproject_rejects_a_depth_of_another_size():
    with pytest.raises(ValueError, match="does not match the 640x480 camera"):
        TUM.backproject(np.ones((240, 320), np.float32))


def test_project_marks_points_behind_the_camera_nan():
    uv, z = TUM.project(np.array([[0.0, 0.0, 1.0], [0.1, 0.1, -1.0], [0.1, 0.1, 0.0]], np.float32))
    np.testing.assert_allclose(uv[0], [TUM.cx, TUM.cy], rtol=1e-6)
    assert np.isnan(uv[1:]).all()
    np.testing.assert_array_equal(z, [1.0, -1.0, 0.0])


def test_torch_backproject_and_project_match_numpy_with_batches_and_finite_gradients(tum_depth):
    depth = torch.from_numpy(np.nan_to_num(tum_depth, nan=1.0)).repeat(2, 1, 1)
    points = TUM.backproject(depth)
    assert points.shape == (2, 480, 640, 3) and points.dtype == torch.float32
    np.testing.assert_allclose(points[1].numpy(), TUM.backproject(depth[1].numpy()), rtol=1e-6)
    behind = torch.tensor([[0.2, 0.1, 2.0], [0.2, 0.1, -2.0]], requires_grad=True)
    uv, _ = TUM.project(behind)
    uv[0].sum().backward()
    assert torch.isnan(uv[1]).all() and torch.isfinite(behind.grad).all()


def test_from_camera_info_reads_p_for_rectified_and_k_for_raw_images():
    msg = camera_info(K_RAW, P_RECT)
    assert PinholeCamera.from_camera_info(msg) == PinholeCamera(480.0, 482.0, 322.0, 244.0, 640, 480)
    raw = PinholeCamera(500.0, 505.0, 310.0, 240.0, 640, 480)
    assert PinholeCamera.from_camera_info(msg, use_rectified=False) == raw


def test_from_camera_info_applies_binning_and_roi_like_image_geometry():
    msg = camera_info(K_RAW, P_RECT, binning=(2, 4), roi=(100, 40, 400, 320))
    camera = PinholeCamera.from_camera_info(msg)
    assert camera == PinholeCamera(240.0, 120.5, (322.0 - 100) / 2, (244.0 - 40) / 4, 200, 80)
    # binning alone (roi all zero = full image); binning 0 means 1
    assert PinholeCamera.from_camera_info(camera_info(K_RAW, P_RECT, binning=(2, 0))) == PinholeCamera(
        240.0, 482.0, 161.0, 244.0, 320, 480
    )


def test_from_camera_info_works_on_rosbags_messages_ros2_and_ros1():
    expected = PinholeCamera.from_camera_info(camera_info(K_RAW, P_RECT, binning=(2, 2), roi=(8, 4, 320, 240)))
    for store, (k, p) in ((Stores.ROS2_HUMBLE, ("k", "p")), (Stores.ROS1_NOETIC, ("K", "P"))):
        types = get_typestore(store).types
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=8, y_offset=4, height=240, width=320, do_rectify=False)
        header = types["std_msgs/msg/Header"]
        header = header(stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam",
                        **({"seq": 0} if store == Stores.ROS1_NOETIC else {}))
        fields = {"header": header, "height": 480, "width": 640, "distortion_model": "plumb_bob",
                  k.swapcase(): np.zeros(5), k: np.array(K_RAW), "R" if k == "K" else "r": np.eye(3).ravel(),
                  p: np.array(P_RECT), "binning_x": 2, "binning_y": 2, "roi": roi}
        fields["D" if k == "K" else "d"] = fields.pop(k.swapcase())
        msg = types["sensor_msgs/msg/CameraInfo"](**fields)
        assert PinholeCamera.from_camera_info(msg) == expected


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (camera_info(K_RAW, [0.0] * 12), "invalid focal length fx=0.0"),
        (camera_info([math.nan] + K_RAW[1:], P_RECT), None),
        (camera_info(K_RAW, P_RECT, width=0), "empty image size 0x480"),
        (camera_info(K_RAW, P_RECT, roi=(600, 0, 100, 480)), "does not fit the 640x480 image"),
        (camera_info(K_RAW, P_RECT, roi=(10, 0, 0, 0)), "offsets"),
    ],
)
def test_from_camera_info_rejects_bad_calibrations(msg, match):
    use_rectified = match is not None
    with pytest.raises(ValueError, match=match or "invalid focal length fx=nan"):
        PinholeCamera.from_camera_info(msg, use_rectified=use_rectified)


def test_camera_rejects_zero_focal_and_empty_size():
    with pytest.raises(ValueError, match="focal length"):
        PinholeCamera(0.0, 500.0, 320.0, 240.0, 640, 480)
    with pytest.raises(ValueError, match="size"):
        PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 0)


def test_resized_intrinsics_put_a_downsampled_plane_back_on_the_plane():
    # Inverse depth of a plane is affine in (u, v), so cv2.resize (pixel-area aligned) downsamples it exactly;
    # back-projecting with the resized camera must land on the same plane. The naive cx' = cx * s would not.
    normal, offset = np.array([0.3, -0.5, 0.81]), 2.0
    v, u = np.mgrid[: TUM.height, : TUM.width]
    inverse = (normal[0] * (u - TUM.cx) / TUM.fx + normal[1] * (v - TUM.cy) / TUM.fy + normal[2]) / offset
    for width, height in ((320, 240), (160, 120)):
        small_inverse = cv2.resize(inverse, (width, height), interpolation=cv2.INTER_AREA)
        small = TUM.resized(width, height)
        assert small.K[0, 0] == pytest.approx(TUM.fx * width / 640)
        points = small.backproject((1.0 / small_inverse).astype(np.float32))
        np.testing.assert_allclose(points.reshape(-1, 3) @ normal, offset, rtol=1e-5)
    naive = PinholeCamera(TUM.fx / 4, TUM.fy / 4, TUM.cx / 4, TUM.cy / 4, 160, 120)
    assert np.abs(naive.backproject((1.0 / small_inverse).astype(np.float32)) @ normal - offset).max() > 1e-3


# ---------------------------------------------------------------- transforms


def test_optical_to_body_rotation_matches_rep103_and_the_usual_static_transform():
    np.testing.assert_allclose(transform_matrix((0, 0, 0), (-0.5, 0.5, -0.5, 0.5)), OPTICAL_TO_BODY, atol=1e-12)
    optical_forward, optical_right, optical_down = [0, 0, 1], [1, 0, 0], [0, 1, 0]
    body = transform_points(OPTICAL_TO_BODY, np.array([optical_forward, optical_right, optical_down], float))
    np.testing.assert_allclose(body, [[1, 0, 0], [0, -1, 0], [0, 0, -1]], atol=1e-12)  # forward, right, down


def test_transform_compose_invert_and_nan_points():
    transform = transform_matrix((1.0, -2.0, 0.5), (0.1, 0.2, 0.3, 0.9))
    np.testing.assert_allclose(transform @ invert_transform(transform), np.eye(4), atol=1e-12)
    points = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]], np.float32)
    moved = transform_points(transform, points)
    assert moved.dtype == np.float32 and np.isnan(moved[1]).all()
    np.testing.assert_allclose(transform_points(invert_transform(transform), moved)[0], points[0], rtol=1e-5)
    # a quarter turn about z maps x to y, then the translation is added
    quarter = transform_matrix((1, 0, 0), (0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)))
    np.testing.assert_allclose(transform_points(quarter, np.array([[1.0, 0, 0]])), [[1, 1, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        transform_matrix((0, 0, 0), (0, 0, 0, 0))


# ---------------------------------------------------------------- point clouds


def test_pack_rgb_is_depth_image_proc_layout_bit_exact():
    packed = pack_rgb(np.array([[255, 0, 0], [0x12, 0x34, 0x56], [0, 0, 255]], np.uint8))
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed.view(np.uint32), [0x00FF0000, 0x00123456, 0x000000FF])
    assert packed[1:2].tobytes() == bytes([0x56, 0x34, 0x12, 0x00])  # b, g, r, 0 at byte offsets 0..3
    rgb = np.random.default_rng(0).integers(0, 256, (50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_rgb(pack_rgb(rgb)), rgb)


def test_organised_cloud_keeps_image_layout_and_nan(tum_depth, shared_data):
    color = cv2.cvtColor(cv2.imread(str(shared_data / "tum_fr3_single" / "TUM_color.png")), cv2.COLOR_BGR2RGB)
    points = TUM.backproject(tum_depth)
    cloud = build_cloud(points, color)
    assert cloud.dtype == XYZRGB_DTYPE and cloud.shape == (480, 640)
    invalid = np.isnan(tum_depth)
    assert np.isnan(cloud["x"][invalid]).all() and not np.isnan(cloud["z"][~invalid]).any()
    np.testing.assert_array_equal(cloud["z"][~invalid], tum_depth[~invalid])
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), color)


def test_dense_cloud_with_stride_drops_nan_and_range(tum_depth):
    points = TUM.backproject(tum_depth)
    cloud = build_cloud(points, organised=False, stride=4)
    sub = tum_depth[::4, ::4]
    assert cloud.dtype == XYZ_DTYPE and cloud.shape == (np.isfinite(sub).sum(),)
    np.testing.assert_array_equal(cloud["z"], sub[np.isfinite(sub)])
    np.testing.assert_array_equal(cloud["x"], points[::4, ::4, 0][np.isfinite(sub)])
    limited = build_cloud(points, organised=False, stride=4, max_range=2.0)
    distance = np.sqrt(limited["x"] ** 2 + limited["y"] ** 2 + limited["z"] ** 2)
    assert 0 < len(limited) < len(cloud) and distance.max() <= 2.0
    organised = build_cloud(points, stride=4, max_range=2.0)
    assert organised.shape == (120, 160) and np.isfinite(organised["x"]).sum() == len(limited)


def test_voxel_down_sampling_replaces_each_voxel_by_its_centroid_and_mean_colour():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 1.0, 3.0]])
    points = (np.repeat(centres, 50, axis=0) + rng.uniform(-0.01, 0.01, (200, 3))).astype(np.float32)
    colors = np.repeat(np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]], np.uint8), 50, axis=0)
    cloud = build_cloud(points.reshape(20, 10, 3), colors.reshape(20, 10, 3), organised=False, voxel_size=0.5)
    assert cloud.shape == (4,)
    order = np.lexsort((cloud["z"], cloud["y"], cloud["x"]))
    xyz = np.stack((cloud["x"], cloud["y"], cloud["z"]), axis=1)[order]
    expected = points.reshape(4, 50, 3).mean(axis=1)
    np.testing.assert_allclose(xyz, expected[np.lexsort(expected.T[::-1])], atol=1e-6)
    packed = np.sort(cloud["rgb"].view(np.uint32))
    np.testing.assert_array_equal(packed, np.sort(pack_rgb(colors[::50]).view(np.uint32)))
    with pytest.raises(ValueError, match="organised=False"):
        build_cloud(points.reshape(20, 10, 3), voxel_size=0.5)


# ---------------------------------------------------------------- occupancy grid


def _touched_cells(spec, start_xy, end_xy, samples=5000):
    """Brute force: the cells that densely sampled points of a segment fall into (independent of the DDA)."""
    t = np.linspace(0.0, 1.0, samples)[:, None]
    cells = np.floor(spec.cell_coordinates(np.asarray(start_xy) + t * (np.asarray(end_xy) - start_xy)))
    return {(int(c), int(r)) for c, r in cells}


def test_grid_marks_a_single_off_centre_point_in_row_major_order():
    # non-square grid whose origin is not at 0: cell (col, row) = floor((x - ox) / res), floor((y - oy) / res)
    spec = GridSpec(resolution=0.5, width=8, height=4, origin_x=-2.0, origin_y=-1.0)
    grid = occupancy_grid(np.array([[1.3, 0.6, 0.5]]), spec, (-1.75, -0.75, 0.5),
                          min_obstacle_height=0.1, max_obstacle_height=1.0, max_range=10.0)
    assert grid.shape == (4, 8)
    assert grid[3, 6] == 100 and grid.ravel()[3 * 8 + 6] == 100 and (grid == 100).sum() == 1
    x, y = spec.cell_center(6, 3)
    assert (x, y) == (1.25, 0.75)
    expected_free = _touched_cells(spec, (-1.75, -0.75), (x, y)) - {(6, 3)}
    assert {(int(c), int(r)) for r, c in zip(*np.nonzero(grid == 0), strict=True)} == expected_free


def test_grid_of_a_wall_and_floor_has_exact_occupied_free_and_unknown_cells():
    spec = GridSpec(resolution=0.1, width=40, height=30, origin_x=-1.0, origin_y=-1.5)
    sensor = np.array([0.013, 0.027, 0.6])
    # a wall 0.1 m thick filling cells x in [2.0, 2.1) for y in [-0.5, 0.5), from 0.05 m to 1.2 m high
    wall_y, wall_z = np.meshgrid(np.arange(-0.495, 0.5, 0.01), np.arange(0.05, 1.2, 0.02))
    wall = np.stack((np.full(wall_y.size, 2.05), wall_y.ravel(), wall_z.ravel()), axis=1)
    # floor in front of it, x in [0.5, 1.5), y in [-0.3, 0.3); a ceiling point above the band, a far and a NaN point
    floor_x, floor_y = np.meshgrid(np.arange(0.505, 1.5, 0.01), np.arange(-0.295, 0.3, 0.01))
    floor = np.stack((floor_x.ravel(), floor_y.ravel(), np.zeros(floor_x.size)), axis=1)
    extra = np.array([[1.0, -1.0, 2.5], [30.0, 0.0, 0.5], [np.nan, np.nan, np.nan]])
    grid = occupancy_grid(np.concatenate((wall, floor, extra)), spec, sensor,
                          min_obstacle_height=0.1, max_obstacle_height=1.5, max_range=5.0)

    occupied = {(int(c), int(r)) for r, c in zip(*np.nonzero(grid == 100), strict=True)}
    assert occupied == {(30, r) for r in range(10, 20)}  # col (2.05 + 1) / 0.1, rows (-0.5 + 1.5) / 0.1 ..
    targets = occupied | {(c, r) for c in range(15, 25) for r in range(12, 18)}
    free = set()
    for col, row in targets:
        free |= _touched_cells(spec, sensor[:2], spec.cell_center(col, row))
    free -= occupied
    assert {(int(c), int(r)) for r, c in zip(*np.nonzero(grid == 0), strict=True)} == free
    assert (grid == -1).sum() == grid.size - len(free) - len(occupied)
    assert grid[15, 35] == -1 and grid[0, 0] == -1  # behind the wall, off to the side


def test_grid_ignores_points_beyond_range_and_above_the_band():
    spec = GridSpec(resolution=0.2, width=10, height=10, origin_x=0.0, origin_y=0.0)
    points = np.array([[1.9, 1.1, 0.5], [1.1, 1.1, 3.0]])
    grid = occupancy_grid(points, spec, (0.1, 1.1, 0.5), min_obstacle_height=0.1, max_obstacle_height=1.0,
                          max_range=1.0)
    assert (grid == -1).all()
    with pytest.raises(ValueError, match="max_obstacle_height"):
        occupancy_grid(points, spec, (0, 0, 0), min_obstacle_height=1.0, max_obstacle_height=0.5, max_range=1.0)
    with pytest.raises(ValueError, match="resolution"):
        GridSpec(resolution=0.0, width=10, height=10)


@pytest.mark.parametrize("spread", [50, 10**6])  # bitmap over the bounding box / np.unique for sparse far cells
def test_target_cells_are_deduplicated_exactly(spread):
    from depth_ros.geometry.occupancy import _unique_cells

    cells = np.random.default_rng(2).integers(-spread, spread, (3000, 2))
    cells = np.concatenate((cells, cells[:500]))
    assert {tuple(c) for c in _unique_cells(cells)} == {tuple(c) for c in cells}
    assert len(_unique_cells(cells)) == len(np.unique(cells, axis=0))


def test_cropped_and_flipped_cameras_follow_the_pixels():
    camera = PinholeCamera(fx=500.0, fy=510.0, cx=300.0, cy=200.0, width=640, height=480)
    points = np.array([[0.3, -0.2, 2.0], [-0.5, 0.1, 3.0]])
    uv, _ = camera.project(points)
    uv_crop, _ = camera.cropped(100, 50, 320, 240).project(points)
    np.testing.assert_allclose(uv_crop, uv - [100, 50])
    # mirrored image: the mirrored point lands on the mirrored column, same row
    uv_flip, _ = camera.flipped().project(points * [-1, 1, 1])
    np.testing.assert_allclose(uv_flip, np.stack([639 - uv[:, 0], uv[:, 1]], axis=1))
    assert camera.cropped(100, 50, 320, 240).width == 320 and camera.flipped().K[0, 0] == 500.0
