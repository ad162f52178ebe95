"""TUM RGB-D format folders: ``rgb.txt`` / ``depth.txt`` index files and 16-bit depth PNGs.

Layout (Sturm et al., "A Benchmark for the Evaluation of RGB-D SLAM Systems", IROS 2012): each index file lists
``timestamp filename`` lines (``#`` starts a comment), file names relative to the folder; colour and depth are paired
by nearest timestamp within a tolerance (the benchmark's ``associate.py`` uses 0.02 s). The 7-Scenes copy in
``../shared/data/7scenes_redkitchen`` uses this layout with millimetre depth and ``camera-intrinsics.txt`` (3x3 K).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from depth_ros.data.frames import RGBDSequence, read_depth_png
from depth_ros.data.images import read_image
from depth_ros.frame import Frame
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.stamps import match_stamps

log = logging.getLogger(__name__)

TUM_DEPTH_SCALE = 5000.0  # TUM RGB-D: 5000 units per metre
SEVEN_SCENES_DEPTH_SCALE = 1000.0  # 7-Scenes: millimetres
INTRINSICS_FILE = "camera-intrinsics.txt"  # 7-Scenes / tsdf-fusion convention: the 3x3 matrix K


def is_tum_folder(path: Path) -> bool:
    """True for a folder holding ``rgb.txt`` and ``depth.txt``."""
    return path.is_dir() and (path / "rgb.txt").is_file() and (path / "depth.txt").is_file()


def read_index(path: Path) -> tuple[np.ndarray, list[str]]:
    """A TUM index file -> ((N,) float64 stamps in seconds, N file names), sorted by stamp.

    Raises:
        ValueError: a line that is not ``timestamp filename``.
    """
    stamps, names = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            stamps.append(float(fields[0]))
            names.append(fields[1])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{number}: expected 'timestamp filename', got {line!r}") from None
    order = np.argsort(stamps, kind="stable")
    return np.asarray(stamps, dtype=np.float64)[order], [names[i] for i in order]


class TumRGBD(RGBDSequence):
    """Colour/depth pairs of a TUM-format folder.

    Args:
        root: folder with ``rgb.txt`` and ``depth.txt``.
        depth_scale: depth PNG units per metre; None: 1000 (millimetres) when the folder has
            ``camera-intrinsics.txt`` (7-Scenes layout), else 5000 (TUM RGB-D).
        intrinsics: ``(fx, fy, cx, cy)`` in pixels at the images' resolution; None reads ``camera-intrinsics.txt``.
        max_dt: largest colour/depth stamp difference in seconds for a pair.

    Raises:
        FileNotFoundError: no index files, or no intrinsics given or found.
        ValueError: malformed index or intrinsics file, or no colour image with a depth partner.
    """

    def __init__(self, root: str | Path, depth_scale: float | None = None,
                 intrinsics: Sequence[float] | None = None, max_dt: float = 0.02):
        self.root = Path(root)
        if not is_tum_folder(self.root):
            raise FileNotFoundError(f"{self.root}: not a TUM-format folder (needs rgb.txt and depth.txt)")
        has_k_file = (self.root / INTRINSICS_FILE).is_file()
        if depth_scale is None:
            depth_scale = SEVEN_SCENES_DEPTH_SCALE if has_k_file else TUM_DEPTH_SCALE
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be > 0 units per metre, got {depth_scale}")
        self.depth_scale = float(depth_scale)
        rgb_stamps, rgb_names = read_index(self.root / "rgb.txt")
        depth_stamps, depth_names = read_index(self.root / "depth.txt")
        pairs = match_stamps(rgb_stamps, depth_stamps, max_dt)
        if not pairs:
            raise ValueError(f"{self.root}: no colour image has a depth image within {max_dt} s")
        self.stamps = rgb_stamps[[i for i, _ in pairs]]
        self.names = [rgb_names[i] for i, _ in pairs]
        self._depth_names = [depth_names[j] for _, j in pairs]
        height, width = read_image(self.root / self.names[0]).shape[:2]
        if intrinsics is None:
            if not has_k_file:
                raise FileNotFoundError(f"{self.root}: no {INTRINSICS_FILE}; give the intrinsics (fx, fy, cx, cy)")
            intrinsics = self._read_intrinsics(self.root / INTRINSICS_FILE)
        if len(intrinsics) != 4:
            raise ValueError(f"intrinsics must be (fx, fy, cx, cy), got {list(intrinsics)}")
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        self.camera = PinholeCamera(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)
        log.info("%s: %d RGB-D pairs, depth scale %g, %s", self.root, len(self), self.depth_scale, self.camera)

    @staticmethod
    def _read_intrinsics(path: Path) -> tuple[float, float, float, float]:
        try:
            k = np.loadtxt(path, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: not a 3x3 matrix of numbers ({exc})") from None
        if k.shape != (3, 3):
            raise ValueError(f"{path}: expected a 3x3 matrix K, got shape {k.shape}")
        return k[0, 0], k[1, 1], k[0, 2], k[1, 2]

    def load(self, index: int) -> Frame:
        rgb = read_image(self.root / self.names[index])
        depth = read_depth_png(self.root / self._depth_names[index], self.depth_scale)
        if depth.shape != rgb.shape[:2] or rgb.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(f"{self.root}: frame {index}: colour {rgb.shape[:2]} and depth {depth.shape} do not "
                             f"match the sequence size {(self.camera.height, self.camera.width)}")
        return self.frame(index, rgb, depth)
