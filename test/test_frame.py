"""The one CameraInfo pairing rule (depth_ros.frame.CameraInfoCache) and the stamped buffer it searches."""

import pickle

import pytest

from depth_ros.frame import CameraInfoCache, NoCameraError
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.stamps import StampedBuffer

VGA = PinholeCamera(525.0, 525.0, 319.5, 239.5, 640, 480)
QVGA = VGA.resized(320, 240)
S = 1_000_000_000


def test_the_camera_with_the_image_stamp_is_taken_else_the_nearest():
    cameras = CameraInfoCache(tolerance=0.1)
    for k in range(3):
        cameras.add("cam", k * S, VGA.resized(640, 480) if k != 1 else PinholeCamera(600.0, 600.0, 320, 240, 640, 480))
    exact = cameras.match("cam", 1 * S, 480, 640)
    assert exact.camera.fx == 600.0 and exact.offset == 0 and exact.stamp_warning is None
    near = cameras.match("cam", int(1.04 * S), 480, 640)  # 40 ms after the second: still it, no warning
    assert near.camera.fx == 600.0 and near.offset == pytest.approx(0.04) and near.stamp_warning is None
    late = cameras.match("cam", 5 * S, 480, 640)
    assert late.camera.fx == 525.0 and late.offset == pytest.approx(3.0)
    assert "using one 3.000 s apart" in late.stamp_warning


def test_an_image_of_another_size_takes_the_nearest_camera_info_of_its_size_with_a_warning():
    cameras = CameraInfoCache(tolerance=0.1)
    cameras.add("cam", 0, QVGA)
    cameras.add("cam", 2 * S, VGA)
    match = cameras.match("cam", 2 * S, 240, 320)
    assert match.camera == QVGA and match.offset == pytest.approx(2.0)
    assert "does not fit this image: CameraInfo describes a 640x480 image" in match.size_warning
    with pytest.raises(NoCameraError, match="CameraInfo for frame 'cam' does not fit this image: .* 1280x960"):
        cameras.match("cam", 2 * S, 960, 1280)


def test_frames_do_not_share_camera_info_and_an_unknown_frame_is_a_clear_error():
    cameras = CameraInfoCache(tolerance=0.1)
    cameras.add("left", 0, VGA)
    with pytest.raises(NoCameraError, match="no valid CameraInfo for frame 'right' yet"):
        cameras.match("right", 0, 480, 640)


def test_a_live_cache_keeps_the_newest_per_frame_and_survives_pickling():
    cameras = CameraInfoCache(tolerance=0.1, capacity=2)
    for k, fx in enumerate((500.0, 510.0, 520.0)):
        cameras.add("cam", k * S, PinholeCamera(fx, fx, 319.5, 239.5, 640, 480))
    assert cameras.match("cam", 0, 480, 640).camera.fx == 510.0  # the oldest (500) is gone
    copy = pickle.loads(pickle.dumps(cameras))  # datasets holding a cache go to DataLoader workers
    assert copy.match("cam", 2 * S, 480, 640).camera.fx == 520.0
    copy.add("cam", 3 * S, VGA)
    assert copy.match("cam", 0, 480, 640).camera.fx == 520.0


def test_stamped_buffer_nearest_within_tolerance_ties_to_the_earlier():
    buffer = StampedBuffer(capacity=None)
    for stamp in (10, 20, 30):
        buffer.add(stamp * 1_000_000, f"item{stamp}")
    assert buffer.nearest(25_000_000, max_dt=0.006) == (20_000_000, "item20")
    assert buffer.nearest(41_000_000, max_dt=0.01) is None
    buffer.discard(20_000_000)
    assert buffer.nearest(21_000_000, max_dt=1.0) == (30_000_000, "item30")
    with pytest.raises(ValueError, match="at least 1"):
        StampedBuffer(capacity=0)
