"""Datasets (bag, TUM, NYU HDF5), stamp matching, splits and training transforms."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_ros.checkpoints import network_size
from depth_ros.data import Split, open_rgbd, parse_frame_range
from depth_ros.data.augment import Augmentation, EpochShuffleSampler, TrainingFrames, TrainTransform
from depth_ros.data.nyu import NyuH5
from depth_ros.data.rosbag import USE_RECTIFIED, BagError, BagReader, RosbagRGBD
from depth_ros.data.tum import TumRGBD
from depth_ros.frame import Frame
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.models.registry import IMAGENET_MEAN, IMAGENET_STD
from depth_ros.stamps import match_stamps

SEVEN_SCENES = "7scenes_redkitchen"
BAG = "7scenes_redkitchen_20f_bag"
ODOM = "7scenes_redkitchen_odom"
COMPRESSED_TOPICS = {"rgb_topic": "/camera/color/image_raw/compressed",
                     "depth_topic": "/camera/depth/image_raw/compressedDepth"}


# ---------------------------------------------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def kitchen(shared_data):
    return TumRGBD(shared_data / SEVEN_SCENES)


def test_tum_loader_reads_7scenes_in_metres_with_its_intrinsics(kitchen, shared_data):
    assert len(kitchen) == 100
    np.testing.assert_allclose(np.diff(kitchen.stamps), 0.1, atol=1e-6)
    assert kitchen.depth_scale == 1000  # 7-Scenes layout (camera-intrinsics.txt) -> millimetres
    assert kitchen.camera == PinholeCamera(585.0, 585.0, 320.0, 240.0, 640, 480)
    frame = kitchen[70]
    assert frame.name == "frames/frame-000210.color.jpg" and frame.stamp == pytest.approx(7.0)
    assert frame.rgb.shape == (480, 640, 3) and frame.rgb.dtype == np.uint8
    raw = cv2.imread(str(shared_data / SEVEN_SCENES / "frames/frame-000210.depth.png"), cv2.IMREAD_UNCHANGED)
    assert frame.depth.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(frame.depth), raw == 0)
    np.testing.assert_allclose(frame.depth[raw > 0], raw[raw > 0] / 1000.0, rtol=1e-6)
    assert 0.8 < np.nanmin(frame.depth) and np.nanmax(frame.depth) < 3.6  # README: 0.80-3.57 m
    bgr = cv2.imread(str(shared_data / SEVEN_SCENES / frame.name))
    np.testing.assert_array_equal(frame.rgb, bgr[..., ::-1])
    with pytest.raises(IndexError):
        kitchen[100]


def test_bag_loader_reads_the_7scenes_bag_like_the_folder(shared_data, kitchen):
    bag = open_rgbd(shared_data / BAG)
    assert isinstance(bag, RosbagRGBD) and len(bag) == 20
    assert bag.camera == kitchen.camera  # from /camera/color/camera_info
    np.testing.assert_allclose(bag.stamps - bag.stamps[0], kitchen.stamps[:20], atol=1e-6)
    for index in (0, 7, 19):
        from_bag, from_folder = bag[index], kitchen[index]
        np.testing.assert_array_equal(from_bag.rgb, from_folder.rgb)
        np.testing.assert_array_equal(np.isnan(from_bag.depth), np.isnan(from_folder.depth))
        np.testing.assert_allclose(from_bag.depth, from_folder.depth, atol=1e-6)
    assert bag.names[3].startswith("/camera/color/image_raw@")


def test_bag_loader_names_the_bags_topics_when_one_is_missing_or_wrong(shared_data):
    with pytest.raises(ValueError, match=r"no topic '/camera/rgb/image'.*/camera/color/image_raw \(sensor_msgs/msg/Im"):
        RosbagRGBD(shared_data / BAG, rgb_topic="/camera/rgb/image")
    with pytest.raises(ValueError, match=r"'/ground_truth/odom' has type nav_msgs/msg/Odometry.*topics: "):
        RosbagRGBD(shared_data / BAG, depth_topic="/ground_truth/odom")


def test_compressed_bag_frames_equal_the_tum_folders_exactly(shared_data):
    bag = RosbagRGBD(shared_data / ODOM / "bag", **COMPRESSED_TOPICS)
    folder = TumRGBD(shared_data / ODOM / "tum")
    assert bag.info_topic == "/camera/color/camera_info" and bag.camera == folder.camera
    assert len(bag) == len(folder) == 600
    np.testing.assert_allclose(bag.stamps, folder.stamps, rtol=0, atol=1e-6)
    for index in range(0, 600, 10):  # the same JPEG and PNG bytes: the same pixels and metres
        from_bag, from_folder = bag[index], folder[index]
        np.testing.assert_array_equal(from_bag.rgb, from_folder.rgb)
        np.testing.assert_array_equal(from_bag.depth, from_folder.depth)
        assert np.isfinite(from_bag.depth).mean() > 0.5


def test_bag_without_depth_topic_gives_every_image_without_depth(shared_data):
    bag = RosbagRGBD(shared_data / ODOM / "bag", rgb_topic=COMPRESSED_TOPICS["rgb_topic"], depth_topic=None)
    folder = TumRGBD(shared_data / ODOM / "tum")
    assert len(bag) == 600
    frame = bag[599]
    assert frame.depth is None and frame.camera == folder.camera
    np.testing.assert_array_equal(frame.rgb, folder[599].rgb)
    with pytest.raises(ValueError, match="has no depth; supervised training and evaluation need a depth"):
        TrainTransform(input_size=70)(frame, np.random.default_rng(0))


def test_bag_reader_indexes_by_header_stamp_and_reads_back(shared_data):
    with BagReader(shared_data / ODOM / "bag") as bag:
        assert bag.use_rectified is USE_RECTIFIED is True
        refs = bag.index("/camera/depth/image_raw/compressedDepth")
        assert len(refs) == 600 and [r.stamp_ns for r in refs] == sorted(r.stamp_ns for r in refs)
        assert refs[30].stamp == pytest.approx(1700000001.0, abs=1e-6)
        msg = bag.read(refs[30])
        assert msg.format == "16UC1; compressedDepth png" and bag.decode_depth(refs[30], msg).shape == (480, 640)
        with pytest.raises(ValueError, match=r"has type sensor_msgs/msg/CompressedImage, expected .*Odometry"):
            bag.index("/camera/depth/image_raw/compressedDepth", ("nav_msgs/msg/Odometry",))


def _truncated_copy(source: Path, target: Path) -> Path:
    """A rosbag2 folder whose MCAP file is the first half of ``source``'s."""
    target.mkdir()
    (target / "metadata.yaml").write_bytes((source / "metadata.yaml").read_bytes())
    mcap = next(source.glob("*.mcap"))
    (target / mcap.name).write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    return target


def test_truncated_bag_gives_one_bag_error_naming_it_in_every_reader(shared_data, tmp_path):
    from depth_ros.tools.demo import BagPlayback

    broken = _truncated_copy(shared_data / BAG, tmp_path / "broken")
    readers = {"training": lambda: open_rgbd(broken), "bag layer": lambda: BagReader(broken),
               "demo": lambda: BagPlayback(broken, "/camera/color/image_raw", None, None, None)}
    for name, read in readers.items():
        with pytest.raises(BagError) as error:
            read()
        message = str(error.value)
        assert isinstance(error.value, ValueError) and "\n" not in message, name
        assert message.startswith(f"{broken}: cannot open bag: ") and "magic is invalid" in message, name


def test_bag_split_by_time_ranges_and_every_nth(shared_data):
    bag = open_rgbd(shared_data / BAG / "7scenes_redkitchen_20f.mcap")  # the MCAP file itself also opens
    train, val = Split(val_time_ranges=[[0.45, 0.95]]).indices(bag.stamps)
    assert val == [5, 6, 7, 8, 9] and train == [0, 1, 2, 3, 4, *range(10, 20)]
    train, val = Split(val_every_nth=5).indices(bag.stamps)
    assert val == [0, 5, 10, 15] and len(train) == 16


# ---------------------------------------------------------------------------------------------------------------
# Synthetic bags: ROS 1 and ROS 2 (sqlite3), compressed colour, 32FC1 depth, stamps off by a few milliseconds


def _write_bag(path: Path, ros1: bool, depth_offsets_s: list[float]) -> list[np.ndarray]:
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    types = store.types
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (12, 16, 3), dtype=np.uint8) for _ in depth_offsets_s]

    def header(t):
        stamp = types["builtin_interfaces/msg/Time"](sec=100 + int(t), nanosec=int(round((t % 1) * 1e9)))
        if ros1:
            return types["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id="cam")
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam")

    matrices = {"d": np.zeros(5), "k": np.array([20.0, 0, 7.5, 0, 21.0, 5.5, 0, 0, 1]), "r": np.eye(3).ravel(),
                "p": np.array([20.0, 0, 7.5, 0, 0, 21.0, 5.5, 0, 0, 0, 1, 0])}
    info = types["sensor_msgs/msg/CameraInfo"](
        header=header(0.0), height=12, width=16, distortion_model="plumb_bob", binning_x=0, binning_y=0,
        **{(name.upper() if ros1 else name): value for name, value in matrices.items()},
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    if ros1:
        from rosbags.rosbag1 import Writer

        writer = Writer(path)
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        writer = Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3)
    with writer:
        kwargs = {"typestore": store}
        rgb_conn = writer.add_connection("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", **kwargs)
        depth_conn = writer.add_connection("/cam/depth", "sensor_msgs/msg/Image", **kwargs)
        info_conn = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", **kwargs)
        writer.write(info_conn, 1, serialize(info, "sensor_msgs/msg/CameraInfo"))
        for i, (rgb, offset) in enumerate(zip(images, depth_offsets_s, strict=True)):
            t = i * 0.5
            png = cv2.imencode(".png", rgb[..., ::-1])[1]
            compressed = types["sensor_msgs/msg/CompressedImage"](header=header(t), format="png", data=png.ravel())
            depth = np.full((12, 16), 1.0 + i, dtype=np.float32)
            depth[0, 0] = np.nan
            kwargs = {"is_bigendian": 0, "step": 64, "data": depth.view(np.uint8).ravel(), "encoding": "32FC1"}
            image = types["sensor_msgs/msg/Image"](header=header(t + offset), height=12, width=16, **kwargs)
            writer.write(rgb_conn, int((100 + t) * 1e9), serialize(compressed, "sensor_msgs/msg/CompressedImage"))
            writer.write(depth_conn, int((100 + t + offset) * 1e9), serialize(image, "sensor_msgs/msg/Image"))
    return images


@pytest.mark.parametrize("ros1", [False, True], ids=["ros2-sqlite3", "ros1"])
def test_bag_pairs_by_stamp_within_tolerance(tmp_path, ros1):
    path = tmp_path / ("test.bag" if ros1 else "test_bag")
    images = _write_bag(path, ros1, depth_offsets_s=[0.0, 0.005, 0.05, -0.015])
    bag = RosbagRGBD(path, rgb_topic="/cam/image/compressed", depth_topic="/cam/depth", info_topic="/cam/camera_info",
                     max_dt=0.02)
    assert len(bag) == 3  # frame 2's depth is 50 ms off
    np.testing.assert_allclose(bag.stamps, [100.0, 100.5, 101.5])
    assert bag.camera == PinholeCamera(20.0, 21.0, 7.5, 5.5, 16, 12)  # from P (here equal to K)
    frame = bag[2]
    np.testing.assert_array_equal(frame.rgb, images[3])
    assert np.isnan(frame.depth[0, 0]) and np.all(frame.depth[1:] == 4.0)
    assert len(RosbagRGBD(path, rgb_topic="/cam/image/compressed", depth_topic="/cam/depth",
                          info_topic="/cam/camera_info", max_dt=0.1)) == 4


def test_match_stamps_takes_nearest_partner_within_tolerance():
    pairs = match_stamps(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.01, 0.95, 1.015, 2.5, 3.019]), max_dt=0.02)
    assert pairs == [(0, 0), (1, 2), (3, 4)]
    assert match_stamps(np.array([1.0]), np.array([]), 0.1) == []


# ---------------------------------------------------------------------------------------------------------------
# Synthetic TUM folders and NYU files


def _write_tum(root: Path, scale: float, with_k_file: bool) -> np.ndarray:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    depth_m = np.array([[0.0, 1.0, 2.5], [3.0, 0.5, 0.0]])
    rgb_lines, depth_lines = ["# colour"], ["# depth"]
    for i in range(3):
        cv2.imwrite(str(root / f"rgb/{i}.png"), np.full((2, 3, 3), 40 * i, np.uint8))
        cv2.imwrite(str(root / f"depth/{i}.png"), np.round(depth_m * scale).astype(np.uint16))
        rgb_lines.append(f"{i:.3f} rgb/{i}.png")
        depth_lines.append(f"{i + 0.01:.3f} depth/{i}.png")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    if with_k_file:
        np.savetxt(root / "camera-intrinsics.txt", [[2.0, 0, 1.0], [0, 2.5, 0.5], [0, 0, 1]])
    return depth_m


def test_tum_depth_scale_and_intrinsics_parameters(tmp_path):
    depth_m = _write_tum(tmp_path / "tum", 5000, with_k_file=False)
    with pytest.raises(FileNotFoundError, match="give the intrinsics"):
        TumRGBD(tmp_path / "tum")
    seq = open_rgbd(tmp_path / "tum", intrinsics=[2.0, 2.5, 1.0, 0.5])
    assert seq.depth_scale == 5000 and seq.camera == PinholeCamera(2.0, 2.5, 1.0, 0.5, 3, 2)
    expected = np.where(depth_m > 0, depth_m, np.nan)
    np.testing.assert_allclose(seq[1].depth, expected, rtol=1e-6)
    assert seq[2].rgb[0, 0].tolist() == [80, 80, 80]
    half = TumRGBD(tmp_path / "tum", depth_scale=2500, intrinsics=[2.0, 2.5, 1.0, 0.5])
    np.testing.assert_allclose(half[0].depth, expected * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="no colour image has a depth image within 0.005 s"):
        TumRGBD(tmp_path / "tum", intrinsics=[2.0, 2.5, 1.0, 0.5], max_dt=0.005)
    _write_tum(tmp_path / "scenes", 1000, with_k_file=True)
    seven = open_rgbd(tmp_path / "scenes")
    assert seven.depth_scale == 1000 and seven.camera == PinholeCamera(2.0, 2.5, 1.0, 0.5, 3, 2)
    np.testing.assert_allclose(seven[0].depth, expected, rtol=1e-6)


def test_nyu_h5_files_with_default_intrinsics_scaled_to_their_size(tmp_path):
    import h5py

    for i in range(2):
        with h5py.File(tmp_path / f"{i:05d}.h5", "w") as f:
            f["rgb"] = np.full((3, 240, 320), i, np.uint8)
            depth = np.full((240, 320), 2.0 + i, np.float32)
            depth[0, 0] = 0.0
            f["depth"] = depth
    seq = open_rgbd(tmp_path)
    assert isinstance(seq, NyuH5) and len(seq) == 2 and seq.names == ["00000.h5", "00001.h5"]
    assert seq.camera.width == 320 and seq.camera.fx == pytest.approx(518.8579 / 2)
    frame = seq[1]
    assert frame.rgb.shape == (240, 320, 3) and frame.rgb[5, 5].tolist() == [1, 1, 1]
    assert np.isnan(frame.depth[0, 0]) and frame.depth[1, 1] == 3.0
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["image"] = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="expected datasets 'rgb' and 'depth'"):
        NyuH5(tmp_path / "bad.h5")


def test_open_rgbd_rejects_unknown_paths_and_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        open_rgbd(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a TUM-format folder"):
        open_rgbd(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_rgbd(tmp_path, format="kitti")


# ---------------------------------------------------------------------------------------------------------------
# Splits


def test_split_by_frame_ranges_and_complements():
    stamps = np.arange(10) * 0.1
    assert Split(train_frames="0:7", val_frames="7:10").indices(stamps) == (list(range(7)), [7, 8, 9])
    assert Split(val_frames="-2:").indices(stamps) == (list(range(8)), [8, 9])
    assert Split(train_time_ranges=[[0.0, 0.25], [0.55, 1.0]]).indices(stamps) == (
        [0, 1, 2, 6, 7, 8, 9], [3, 4, 5])
    with pytest.raises(ValueError, match="in both training and validation"):
        Split(train_frames="0:7", val_frames="6:10").indices(stamps)
    with pytest.raises(ValueError, match="not both"):
        Split(val_frames="0:2", val_time_ranges=[[0, 1]]).indices(stamps)
    with pytest.raises(ValueError, match="give training and/or validation"):
        Split().indices(stamps)
    with pytest.raises(ValueError, match="no training frame"):
        Split(val_frames=":").indices(stamps)


def test_parse_frame_range():
    assert list(parse_frame_range("70:100", 100)) == list(range(70, 100))
    assert list(parse_frame_range(":3", 10)) == [0, 1, 2]
    for bad in ("70-100", "a:b", "5"):
        with pytest.raises(ValueError, match="not of the form A:B"):
            parse_frame_range(bad, 100)
    with pytest.raises(ValueError, match="selects no frame"):
        parse_frame_range("200:300", 100)


# ---------------------------------------------------------------------------------------------------------------
# Training transform


def _coded_frame() -> Frame:
    """A 48x64 frame whose depth encodes its pixel: depth = 1 + u / 100 + v / 10000."""
    v, u = np.mgrid[0:48, 0:64]
    depth = (1 + u / 100 + v / 10000).astype(np.float32)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return Frame(rgb, PinholeCamera(50.0, 45.0, 30.2, 25.7, 64, 48), 0, depth=depth, name="coded")


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_intrinsics_in_step_with_resize_crop_and_flip(seed):
    frame = _coded_frame()
    sample = TrainTransform(28, Augmentation(hue=0.1))(frame, np.random.default_rng(seed))
    assert sample["image"].shape == (3, 28, 28) and sample["depth"].shape == (28, 28)
    fx, fy, cx, cy = sample["intrinsics"].tolist()
    net_h, net_w = network_size(48, 64, 28)
    assert (net_h, net_w) == (28, 42)
    code = (sample["depth"].numpy().astype(np.float64) - 1) * 100
    u_src = np.floor(code + 1e-3)
    v_src = np.round((code - u_src) * 100)
    vv, uu = np.mgrid[0:28, 0:28]
    # the same viewing ray in the original camera; a mirrored image sees the mirrored ray (x -> -x)
    mirrored = -1.0 if code[0, 0] > code[0, -1] else 1.0
    u_expected = mirrored * (uu - cx) / fx * frame.camera.fx + frame.camera.cx
    v_expected = (vv - cy) / fy * frame.camera.fy + frame.camera.cy
    tolerance = 0.5 * 64 / net_w + 0.5  # nearest-neighbour resampling
    assert np.abs(u_src - u_expected).max() <= tolerance
    assert np.abs(v_src - v_expected).max() <= 0.5 * 48 / net_h + 0.5
    assert fx == pytest.approx(50.0 * net_w / 64) and fy == pytest.approx(45.0 * net_h / 48)


def test_train_transform_flips_sometimes_and_is_deterministic_per_rng():
    frame = _coded_frame()
    transform = TrainTransform(28, Augmentation())
    flipped = []
    for seed in range(8):
        a = transform(frame, np.random.default_rng(seed))
        b = transform(frame, np.random.default_rng(seed))
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
        flipped.append(bool(a["depth"][0, 0] > a["depth"][0, -1]))  # depth grows with u unless mirrored
    assert any(flipped) and not all(flipped)


def test_train_transform_without_augmentation_only_resizes_crops_and_normalises():
    frame = _coded_frame()
    sample = TrainTransform(28)(frame, np.random.default_rng(0))
    fx, fy, cx, cy = sample["intrinsics"].tolist()
    left = round(frame.camera.resized(42, 28).cx - cx)
    resized = cv2.resize(frame.rgb.astype(np.float32) / 255, (42, 28), interpolation=cv2.INTER_CUBIC)
    expected = (np.clip(resized[:, left:left + 28], 0, 1) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0), expected, atol=1e-5)


def test_training_frames_and_sampler_are_pure_functions_of_seed_and_epoch():
    frames = [_coded_frame()] * 5

    class Seq:
        def __getitem__(self, i):
            return frames[i]

    dataset = TrainingFrames(Seq(), [0, 2, 4], TrainTransform(28, Augmentation()), seed=3)
    first = dataset[1]
    assert first["frame"] == 2
    dataset.set_epoch(1)
    other_epoch = dataset[1]
    dataset.set_epoch(0)
    assert torch.equal(dataset[1]["image"], first["image"])
    assert not torch.equal(other_epoch["image"], first["image"])
    sampler = EpochShuffleSampler(20, seed=3)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == epoch0 and sorted(epoch0) == list(range(20)) and epoch1 != epoch0
