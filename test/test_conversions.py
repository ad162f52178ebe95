"""Message <-> numpy conversions on real rclpy messages (and rosbags messages), built from the real TUM frame."""

import struct

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import GridSpec
from depth_ros.geometry.pointcloud import build_cloud, pack_rgb
from depth_ros.geometry.transform import pose_msg_to_matrix, transform_matrix
from depth_ros.ros.conversions import (
    camera_info_msg,
    cloud_msg_to_array,
    compressed_depth_to_array,
    compressed_to_rgb,
    depth_image_to_array,
    depth_to_image_msg,
    grid_to_msg,
    image_to_rgb,
    points_to_cloud_msg,
    rgb_to_image_msg,
)
from depth_ros.testing import large_png

TUM = PinholeCamera(fx=535.4, fy=539.2, cx=320.1, cy=247.6, width=640, height=480)
ROSBAGS = get_typestore(Stores.ROS2_HUMBLE)


@pytest.fixture(scope="module")
def rgb(shared_data) -> np.ndarray:
    """The real TUM fr3 colour frame, 640x480 RGB uint8."""
    return cv2.cvtColor(cv2.imread(str(shared_data / "tum_fr3_single" / "TUM_color.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def depth_raw(shared_data) -> np.ndarray:
    """The real TUM fr3 depth frame as stored: uint16, metres = value / 5000, 0 = no measurement."""
    return cv2.imread(str(shared_data / "tum_fr3_single" / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)


def header(frame_id="camera_color_optical_frame", sec=1700000000, nanosec=123456789) -> Header:
    out = Header(frame_id=frame_id)
    out.stamp.sec, out.stamp.nanosec = sec, nanosec
    return out


def image_msg(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    """An Image whose rows are the bytes of ``pixels`` (H, W, ...) followed by ``padding`` bytes of 0xAB."""
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    padded = np.concatenate((rows, np.full((height, padding), 0xAB, np.uint8)), axis=1)
    return Image(header=header(), height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                 step=padded.shape[1], data=padded.tobytes())


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Independent BT.601 (limited range) RGB -> packed 4:2:2 encoder; chroma from the even pixel of each pair."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u[:, 0::2], "V": v[:, 0::2]}
    packed = np.stack([planes[name] for name in order.split()], axis=-1)  # (H, W/2, 4)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8).reshape(rgb.shape[0], rgb.shape[1], 2)


# ---------------------------------------------------------------- colour images


@pytest.mark.parametrize(
    ("encoding", "convert"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack((rgb, np.full(rgb.shape[:2], 7, np.uint8)))),
        ("bgra8", lambda rgb: np.dstack((rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)))),
    ],
)
@pytest.mark.parametrize("padding", [0, 13])
def test_color_encodings_give_the_original_rgb(rgb, encoding, convert, padding):
    out = image_to_rgb(image_msg(convert(rgb), encoding, padding))
    assert out.dtype == np.uint8 and out.shape == (480, 640, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_is_replicated_to_three_channels(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = image_to_rgb(image_msg(gray[..., None], "mono8", padding=3))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


@pytest.mark.parametrize(
    ("encoding", "order"),
    [("uyvy", "U Y0 V Y1"), ("yuv422", "U Y0 V Y1"), ("yuyv", "Y0 U Y1 V"), ("yuv422_yuy2", "Y0 U Y1 V")],
)
def test_yuv422_encodings_decode_within_quantisation(rgb, encoding, order):
    pairs = rgb.copy()
    pairs[:, 1::2] = pairs[:, 0::2]  # equal pixel pairs: 4:2:2 chroma subsampling loses nothing
    out = image_to_rgb(image_msg(yuv422(pairs, order), encoding, padding=8))
    assert out.shape == (480, 640, 3)
    assert np.abs(out.astype(int) - pairs).max() <= 3


def test_image_from_a_rosbags_message_and_rgb_round_trip(rgb):
    msg = rgb_to_image_msg(rgb, header())
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 1920, "camera_color_optical_frame")
    bag_msg = ROSBAGS.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/Image")
    assert isinstance(bag_msg.data, np.ndarray)
    np.testing.assert_array_equal(image_to_rgb(bag_msg), rgb)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"encoding": "bayer_rggb8"}, "unsupported image encoding 'bayer_rggb8'"),
        ({"width": 0}, "zero size"),
        ({"height": 0}, "zero size"),
        ({"step": 100}, "step 100 is smaller than width x bytes per pixel = 640 x 3 = 1920"),
        ({"data": bytes(1920 * 479)}, "fewer than step x height = 1920 x 480"),
        ({"encoding": "yuyv", "width": 639, "step": 1280}, "odd"),
    ],
)
def test_malformed_images_raise_a_useful_value_error(rgb, change, match):
    msg = image_msg(rgb, "rgb8")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(ValueError, match=match):
        image_to_rgb(msg)


def test_compressed_jpeg_and_png(rgb):
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    png = CompressedImage(header=header(), format="png", data=cv2.imencode(".png", bgr)[1].tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(png), rgb)
    jpeg = CompressedImage(header=header(), format="rgb8; jpeg compressed bgr8",
                           data=cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    decoded = compressed_to_rgb(jpeg)
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 3
    with pytest.raises(ValueError, match="cannot decode compressed image .format 'jpeg'"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=bytes(jpeg.data)[:100]))
    with pytest.raises(ValueError, match="no data"):
        compressed_to_rgb(CompressedImage(format="png"))


def test_oversized_images_are_refused_from_their_header_before_decoding(rgb):
    bomb = CompressedImage(format="png", data=large_png())  # 10000 x 10000 px
    with pytest.raises(ValueError, match=r"compressed image \(format 'png'\) is 10000x10000 = 100000000 px, more "
                                         r"than the limit of 16777216 px \(max_image_pixels\)"):
        compressed_to_rgb(bomb, max_pixels=4096 * 4096)
    truncated = CompressedImage(format="png", data=bytes(bomb.data)[:200])  # header intact, pixels missing
    with pytest.raises(ValueError, match="is 10000x10000"):
        compressed_to_rgb(truncated, max_pixels=4096 * 4096)
    small = CompressedImage(format="png", data=cv2.imencode(".png", rgb)[1].tobytes())
    assert compressed_to_rgb(small, max_pixels=640 * 480).shape == (480, 640, 3)
    with pytest.raises(ValueError, match="color image is 640x480 = 307200 px, more than the limit of 307199 px"):
        image_to_rgb(image_msg(rgb, "rgb8"), max_pixels=640 * 480 - 1)
    huge = image_msg(rgb, "rgb8")
    huge.width, huge.height, huge.step = 100_000, 100_000, 300_000  # header fields only: checked before the data
    with pytest.raises(ValueError, match="is 100000x100000"):
        image_to_rgb(huge, max_pixels=640 * 480)
    with pytest.raises(ValueError, match="cannot decode compressed image .* its header is unreadable"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"), max_pixels=640 * 480)


# ---------------------------------------------------------------- depth images


def test_16uc1_millimetres_become_metres_with_zero_invalid(depth_raw):
    millimetres = np.rint(depth_raw / 5.0).astype(np.uint16)  # TUM stores 1/5000 m; REP 118 16UC1 is mm
    expected = np.where(millimetres == 0, np.nan, millimetres.astype(np.float32) / np.float32(1000)).astype(np.float32)
    depth = depth_image_to_array(image_msg(millimetres[..., None], "16UC1", padding=6))
    assert depth.dtype == np.float32 and np.isnan(depth).sum() == (depth_raw == 0).sum() > 0
    np.testing.assert_array_equal(depth, expected)
    big = depth_image_to_array(image_msg(millimetres.astype(">u2")[..., None], "16UC1", bigendian=True))
    np.testing.assert_array_equal(big, expected)


def test_32fc1_invalid_values_become_nan():
    values = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, -2.0]], np.float32)
    depth = depth_image_to_array(image_msg(values[..., None], "32FC1"))
    np.testing.assert_array_equal(depth, [[1.5, np.nan, np.nan], [np.nan, np.nan, np.nan]])
    with pytest.raises(ValueError, match="unsupported depth encoding 'mono16'"):
        depth_image_to_array(image_msg(values[..., None], "mono16"))
    with pytest.raises(ValueError, match="fewer than step x height"):
        depth_image_to_array(Image(height=2, width=3, encoding="32FC1", step=12, data=bytes(20)))


def test_32fc1_message_round_trips_through_rclpy_serialization(depth_raw):
    depth = np.where(depth_raw == 0, np.nan, depth_raw / 5000.0).astype(np.float32)
    msg = depth_to_image_msg(depth, header())
    assert (msg.encoding, msg.step, msg.is_bigendian, msg.height, msg.width) == ("32FC1", 2560, False, 480, 640)
    back = deserialize_message(serialize_message(msg), Image)
    assert back.header == header()
    np.testing.assert_array_equal(depth_image_to_array(back), depth)
    bag_msg = ROSBAGS.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(depth_image_to_array(bag_msg), depth)


def compressed_depth_msg(encoding: str, png_pixels: np.ndarray, quant=(0.0, 0.0), kind: int = 0) -> CompressedImage:
    """A compressedDepth CompressedImage as compressed_depth_image_transport writes it: little-endian header
    (int32 kind, float32 depthQuantA, float32 depthQuantB), then the 16-bit PNG."""
    data = struct.pack("<iff", kind, *quant) + cv2.imencode(".png", png_pixels)[1].tobytes()
    return CompressedImage(header=header(), format=f"{encoding}; compressedDepth png", data=data)


def test_compressed_depth_16uc1_decodes_like_the_raw_image(depth_raw):
    millimetres = np.rint(depth_raw / 5.0).astype(np.uint16)
    depth = compressed_depth_to_array(compressed_depth_msg("16UC1", millimetres))
    assert depth.dtype == np.float32 and np.isnan(depth).sum() == (millimetres == 0).sum() > 0
    np.testing.assert_array_equal(depth, depth_image_to_array(image_msg(millimetres[..., None], "16UC1")))
    bag_msg = ROSBAGS.deserialize_cdr(serialize_message(compressed_depth_msg("16UC1", millimetres)),
                                      "sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(compressed_depth_to_array(bag_msg), depth)


def test_compressed_depth_32fc1_inverse_depth_quantisation_round_trip(depth_raw):
    # the publisher's quantisation with its defaults depth_quantization = 100, depth_max = 10 m
    metres = np.where(depth_raw == 0, np.nan, depth_raw / 5000.0).astype(np.float32)
    metres[0, :10] = 12.0  # beyond depth_max: not coded
    quant_a = np.float32(100.0 * 101.0)
    quant_b = np.float32(1.0) - quant_a / np.float32(10.0)
    with np.errstate(invalid="ignore"):
        coded = np.where(metres < 10.0, quant_a / metres + quant_b, 0).astype(np.uint16)
    depth = compressed_depth_to_array(compressed_depth_msg("32FC1", coded, (quant_a, quant_b)))
    valid = np.isfinite(metres) & (metres < 10.0)
    np.testing.assert_array_equal(np.isfinite(depth), valid)
    truth = metres[valid]
    error = depth[valid] - truth  # truncated inverse depth: decoded depth is up to one step 1 / A further away
    assert np.all(error >= -1e-6 * truth) and np.all(error <= truth ** 2 / (quant_a - truth) + 1e-6 * truth)
    assert error.max() > 1e-4  # quantised, not lossless


@pytest.mark.parametrize(("msg", "match"), [
    (CompressedImage(format="16UC1; compressedDepth rvl", data=bytes(20)), "unsupported compressedDepth format"),
    (CompressedImage(format="png", data=bytes(20)), "unsupported compressedDepth format 'png'"),
    (CompressedImage(format="16UC1; compressedDepth png", data=bytes(12)), "12 bytes, no more than its 12-byte"),
    (CompressedImage(format="16UC1; compressedDepth png", data=struct.pack("<iff", 3, 0, 0) + bytes(8)),
     "header has compression format 3"),
    (CompressedImage(format="16UC1; compressedDepth png", data=struct.pack("<iff", 0, 0, 0) + bytes(8)),
     "cannot decode compressedDepth image"),
])
def test_compressed_depth_rejects_malformed_formats_headers_and_payloads(msg, match):
    with pytest.raises(ValueError, match=match):
        compressed_depth_to_array(msg)


def test_compressed_depth_rejects_an_8_bit_png():
    with pytest.raises(ValueError, match="not a single-channel 16-bit PNG: uint8"):
        compressed_depth_to_array(compressed_depth_msg("16UC1", np.zeros((4, 4), np.uint8)))


# ---------------------------------------------------------------- clouds, grids, camera info, transforms


def test_cloud_message_fields_bytes_and_round_trip(depth_raw, rgb):
    depth = np.where(depth_raw == 0, np.nan, depth_raw / 5000.0).astype(np.float32)
    organised = build_cloud(TUM.backproject(depth), rgb)
    msg = points_to_cloud_msg(organised, header())
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1)
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense) == (480, 640, 16, 10240, False)
    # colour bytes of pixel (row 100, col 200) at rgb offset 12: b, g, r, 0 as depth_image_proc writes them
    point = bytes(msg.data[(100 * 640 + 200) * 16 : (100 * 640 + 201) * 16])
    assert point[12:16] == bytes((*rgb[100, 200, ::-1], 0))
    back = cloud_msg_to_array(deserialize_message(serialize_message(msg), PointCloud2))
    assert back.shape == (480, 640)
    assert back.tobytes() == organised.tobytes()

    dense = build_cloud(TUM.backproject(depth), organised=False, stride=2)
    msg = points_to_cloud_msg(dense, header())
    assert (msg.height, msg.width, msg.point_step, msg.is_dense) == (1, len(dense), 12, True)
    bag_msg = ROSBAGS.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/PointCloud2")
    assert cloud_msg_to_array(bag_msg).tobytes() == dense.tobytes()


def test_cloud_message_rejects_unstructured_points():
    with pytest.raises(ValueError, match="structured"):
        points_to_cloud_msg(np.zeros((10, 3), np.float32), header())


def test_grid_message_is_row_major_with_lower_left_origin():
    spec = GridSpec(resolution=0.05, width=4, height=3, origin_x=-1.0, origin_y=-0.5)
    grid = np.full((3, 4), -1, np.int8)
    grid[2, 1] = 100  # row 2 (y in [-0.4, -0.35)), col 1 (x in [-0.95, -0.9))
    grid[0, 3] = 0
    msg = deserialize_message(serialize_message(grid_to_msg(grid, spec, header(frame_id="base_link"))), OccupancyGrid)
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (4, 3, pytest.approx(0.05))
    assert (msg.info.origin.position.x, msg.info.origin.position.y, msg.info.origin.orientation.w) == (-1.0, -0.5, 1)
    assert msg.header.frame_id == "base_link" and msg.info.map_load_time == msg.header.stamp
    assert list(msg.data) == [-1, -1, -1, 0, -1, -1, -1, -1, -1, 100, -1, -1]
    with pytest.raises(ValueError, match="int8 of shape"):
        grid_to_msg(grid.T.copy(), spec, header())


def test_camera_info_message_describes_the_camera():
    small = TUM.resized(320, 240)
    msg = deserialize_message(serialize_message(camera_info_msg(small, header())), CameraInfo)
    assert PinholeCamera.from_camera_info(msg) == small
    assert PinholeCamera.from_camera_info(msg, use_rectified=False) == small
    assert (msg.width, msg.height, msg.header.frame_id) == (320, 240, "camera_color_optical_frame")


def test_transform_message_to_matrix():
    msg = TransformStamped()
    msg.transform.translation.x, msg.transform.translation.z = 0.2, 0.5
    msg.transform.rotation.x, msg.transform.rotation.y = -0.5, 0.5
    msg.transform.rotation.z, msg.transform.rotation.w = -0.5, 0.5
    expected = transform_matrix((0.2, 0.0, 0.5), (-0.5, 0.5, -0.5, 0.5))
    np.testing.assert_array_equal(pose_msg_to_matrix(msg), expected)
    np.testing.assert_array_equal(pose_msg_to_matrix(msg.transform), expected)


def test_pack_rgb_matches_message_bytes_for_a_known_colour():
    cloud = build_cloud(np.ones((1, 1, 3), np.float32), np.array([[[0x12, 0x34, 0x56]]], np.uint8))
    msg = points_to_cloud_msg(cloud, header())
    assert bytes(msg.data)[12:] == b"\x56\x34\x12\x00" == pack_rgb(np.array([0x12, 0x34, 0x56], np.uint8)).tobytes()
