"""NYU Depth V2 style HDF5 files: one sample per file with ``rgb`` (3, H, W) uint8 and ``depth`` (H, W) metres.

This is the layout of the widely used NYU Depth V2 HDF5 export (Ma & Karaman, "Sparse-to-Dense", ICRA 2018) that the
Depth Anything V2 fine-tuning tutorials train on. The default intrinsics are those of the NYU Kinect colour camera
(Silberman et al., ECCV 2012, toolbox ``camera_params.m``) at 640x480.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from depth_ros.data.frames import RGBDSequence
from depth_ros.frame import Frame
from depth_ros.geometry.camera import PinholeCamera

NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy at 640x480
NYU_SIZE = (640, 480)
H5_SUFFIXES = (".h5", ".hdf5")


def is_h5_source(path: Path) -> bool:
    """True for an HDF5 file or a folder containing some (searched recursively)."""
    if path.is_file():
        return path.suffix in H5_SUFFIXES
    return path.is_dir() and any(p.suffix in H5_SUFFIXES for p in path.rglob("*"))


class NyuH5(RGBDSequence):
    """Samples of NYU-style HDF5 files, in sorted path order; stamps are the sample indices.

    Args:
        path: one ``.h5`` file or a folder searched recursively for ``.h5`` / ``.hdf5`` files.
        intrinsics: ``(fx, fy, cx, cy)`` at ``size``; default the NYU Kinect camera.
        size: ``(width, height)`` the intrinsics refer to; the camera is rescaled when the files differ.

    Raises:
        FileNotFoundError: no HDF5 file found.
        ImportError: h5py is not installed (``pip install depth_ros[train]``).
    """

    def __init__(self, path: str | Path, intrinsics: Sequence[float] = NYU_INTRINSICS,
                 size: tuple[int, int] = NYU_SIZE):
        import h5py

        self._h5py = h5py
        path = Path(path)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in H5_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no HDF5 (.h5/.hdf5) files")
        self.files = files
        self.stamps = np.arange(len(files), dtype=np.float64)
        self.names = [str(p.relative_to(path)) if p != path else p.name for p in files]
        fx, fy, cx, cy = intrinsics
        width, height = size
        reference = PinholeCamera(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)
        first_height, first_width = self._read(0)[1].shape
        self.camera = reference.resized(first_width, first_height)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        with self._h5py.File(self.files[index], "r") as f:
            if "rgb" not in f or "depth" not in f:
                raise ValueError(f"{self.files[index]}: expected datasets 'rgb' and 'depth', found {list(f.keys())}")
            rgb = np.asarray(f["rgb"])
            depth = np.asarray(f["depth"], dtype=np.float32)
        if rgb.ndim != 3 or rgb.shape[0] != 3 or rgb.dtype != np.uint8 or depth.shape != rgb.shape[1:]:
            raise ValueError(f"{self.files[index]}: expected rgb (3, H, W) uint8 and depth (H, W), "
                             f"got rgb {rgb.dtype} {rgb.shape} and depth {depth.shape}")
        return np.ascontiguousarray(rgb.transpose(1, 2, 0)), depth

    def load(self, index: int) -> Frame:
        rgb, depth = self._read(index)
        if depth.shape != (self.camera.height, self.camera.width):
            raise ValueError(f"{self.files[index]}: size {depth.shape} differs from the first file's "
                             f"{(self.camera.height, self.camera.width)}")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        return self.frame(index, rgb, depth)
