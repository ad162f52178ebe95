"""RGB-D datasets and training transforms: rosbags, TUM-format folders and NYU-style HDF5 files.

Every source is an :class:`RGBDSequence` of :class:`~depth_ros.frame.Frame` (RGB uint8, depth float32 metres with NaN
invalid, intrinsics as a :class:`~depth_ros.geometry.camera.PinholeCamera`); :func:`open_rgbd` picks the reader
from the path.
Bags are read through the one bag layer :class:`depth_ros.data.rosbag.BagReader`; camera poses at image stamps
(odometry, TF, pose topics, TUM ground truth) come from :func:`depth_ros.data.poses.load_camera_trajectory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from depth_ros.data.frames import RGBDSequence, Split, parse_frame_range

FORMATS = ("auto", "tum", "bag", "h5")

__all__ = ["FORMATS", "RGBDSequence", "Split", "open_rgbd", "parse_frame_range"]


def open_rgbd(path: str | Path, format: str = "auto", *, depth_scale: float | None = None,
              intrinsics: Sequence[float] | None = None, rgb_topic: str = "/camera/color/image_raw",
              depth_topic: str = "/camera/depth/image_raw", info_topic: str | None = None,
              max_dt: float = 0.02) -> RGBDSequence:
    """Open an RGB-D dataset.

    Args:
        path: TUM-format folder (``rgb.txt`` + ``depth.txt``), bag (rosbag2 folder, ``.mcap``, ``.db3``, ROS 1
            ``.bag``), or NYU-style HDF5 file / folder of them.
        format: ``auto`` (from the path), ``tum``, ``bag`` or ``h5``.
        depth_scale: TUM depth PNG units per metre (see :class:`~depth_ros.data.tum.TumRGBD`).
        intrinsics: ``(fx, fy, cx, cy)`` override for TUM / HDF5 sources (bags use their CameraInfo).
        rgb_topic: bag colour topic.
        depth_topic: bag depth topic (registered to the colour camera).
        info_topic: bag CameraInfo topic; default ``camera_info`` beside ``rgb_topic``.
        max_dt: colour/depth stamp tolerance in seconds (TUM and bags).

    Raises:
        FileNotFoundError: the path does not exist or is not a recognised dataset.
        ValueError: unknown format, or the dataset is malformed (see the readers).
    """
    from depth_ros.data.nyu import NyuH5, is_h5_source
    from depth_ros.data.rosbag import RosbagRGBD, is_bag
    from depth_ros.data.tum import TumRGBD, is_tum_folder

    path = Path(path).expanduser()
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset")
    if format == "auto":
        format = ("tum" if is_tum_folder(path) else "bag" if is_bag(path) else "h5" if is_h5_source(path) else None)
        if format is None:
            raise FileNotFoundError(f"{path}: not a TUM-format folder (rgb.txt, depth.txt), a bag (metadata.yaml, "
                                    ".mcap, .db3, .bag) or HDF5 files (.h5)")
    if format == "tum":
        return TumRGBD(path, depth_scale=depth_scale, intrinsics=intrinsics, max_dt=max_dt)
    if format == "bag":
        return RosbagRGBD(path, rgb_topic=rgb_topic, depth_topic=depth_topic, info_topic=info_topic, max_dt=max_dt)
    return NyuH5(path) if intrinsics is None else NyuH5(path, intrinsics=intrinsics)
