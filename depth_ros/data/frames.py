"""Common pieces of the RGB-D datasets: the sequence base class, the depth PNG reader and splits (colour images:
:func:`depth_ros.data.images.read_image`)."""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from depth_ros.data.images import read_image
from depth_ros.frame import Frame
from depth_ros.geometry.camera import PinholeCamera


class RGBDSequence(abc.ABC):
    """A random-access sequence of :class:`~depth_ros.frame.Frame` (with depth when the source has it) from one
    camera.

    Attributes:
        stamps: (N,) float64 stamps in seconds, increasing.
        names: N frame names.
        camera: intrinsics shared by all frames.
        frame_id: the images' optical frame (header.frame_id of bag images), None when the source has none.
    """

    stamps: np.ndarray
    names: list[str]
    camera: PinholeCamera
    frame_id: str | None = None

    def __len__(self) -> int:
        return len(self.stamps)

    @abc.abstractmethod
    def load(self, index: int) -> Frame:
        """Read frame ``index`` (0 <= index < len)."""

    def frame(self, index: int, rgb: np.ndarray, depth: np.ndarray | None) -> Frame:
        """The :class:`~depth_ros.frame.Frame` of ``index`` with these pixels (this sequence's camera, stamp,
        frame_id and name)."""
        return Frame(rgb, self.camera, round(float(self.stamps[index]) * 1e9), self.frame_id or "", depth=depth,
                     name=self.names[index])

    def __getitem__(self, index: int) -> Frame:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range: the sequence has {len(self)} frames")
        return self.load(index)


def read_depth_png(path, depth_scale: float) -> np.ndarray:
    """A 16-bit depth PNG as (H, W) float32 metres (``value / depth_scale``), NaN where 0 or 65535 (invalid).

    Raises:
        OSError: missing or unreadable file.
        ValueError: not decodable, larger than :data:`~depth_ros.data.images.MAX_IMAGE_PIXELS`, or not
            single-channel 16-bit.
    """
    raw = read_image(path, color=False)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 16-bit depth image, got {raw.dtype} {raw.shape}")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    depth[(raw == 0) | (raw == np.iinfo(np.uint16).max)] = np.nan
    return depth


def parse_frame_range(text: str, count: int) -> range:
    """``"A:B"`` (Python slice semantics, either end optional, negative counts from the end) -> frame indices.

    Raises:
        ValueError: text not of the form ``A:B`` with integers, or a range that selects no frame.
    """
    match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", str(text))
    if not match:
        raise ValueError(f"frame range {text!r} is not of the form A:B (e.g. 0:70)")
    start, stop = (int(g) if g else None for g in match.groups())
    frames = range(count)[slice(start, stop)]
    if len(frames) == 0:
        raise ValueError(f"frame range {text!r} selects no frame of the {count} available")
    return frames


@dataclass(frozen=True)
class Split:
    """How frames divide into training and validation; give each side by one of these, or leave it empty.

    A side left empty takes every frame the other side does not. Time ranges are in seconds since the first frame,
    each ``[start, end)``.

    Attributes:
        train_frames: ``"A:B"`` frame-index range of the training frames.
        val_frames: ``"A:B"`` frame-index range of the validation frames.
        train_time_ranges: list of ``[start, end]`` seconds for training.
        val_time_ranges: list of ``[start, end]`` seconds for validation.
        val_every_nth: every n-th frame (indices 0, n, 2n, ...) validates, the rest trains.
    """

    train_frames: str | None = None
    val_frames: str | None = None
    train_time_ranges: Sequence[Sequence[float]] | None = None
    val_time_ranges: Sequence[Sequence[float]] | None = None
    val_every_nth: int | None = None

    def indices(self, stamps: np.ndarray) -> tuple[list[int], list[int]]:
        """``(train, val)`` frame indices for a sequence with these stamps (seconds).

        Raises:
            ValueError: a side given twice, both sides empty, overlapping sides, or a side that selects nothing.
        """
        count = len(stamps)
        relative = np.asarray(stamps, dtype=np.float64) - (stamps[0] if count else 0.0)
        train = self._side("train", self.train_frames, self.train_time_ranges, relative)
        val = self._side("val", self.val_frames, self.val_time_ranges, relative)
        if self.val_every_nth is not None:
            if val is not None or train is not None:
                raise ValueError("split: val_every_nth cannot be combined with frame or time ranges")
            if self.val_every_nth < 2:
                raise ValueError(f"split: val_every_nth must be >= 2, got {self.val_every_nth}")
            val = set(range(0, count, self.val_every_nth))
        if train is None and val is None:
            raise ValueError("split: give training and/or validation frames (frames, time ranges or val_every_nth)")
        train = set(range(count)) - val if train is None else train
        val = set(range(count)) - train if val is None else val
        if train & val:
            raise ValueError(f"split: {len(train & val)} frames are in both training and validation")
        for name, side in (("training", train), ("validation", val)):
            if not side:
                raise ValueError(f"split: no {name} frame among the {count} frames")
        return sorted(train), sorted(val)

    @staticmethod
    def _side(name, frames, time_ranges, relative) -> set[int] | None:
        if frames is not None and time_ranges is not None:
            raise ValueError(f"split: give {name}_frames or {name}_time_ranges, not both")
        if frames is not None:
            return set(parse_frame_range(frames, len(relative)))
        if time_ranges is not None:
            selected = set()
            for bounds in time_ranges:
                if len(bounds) != 2 or not bounds[0] < bounds[1]:
                    raise ValueError(f"split: {name}_time_ranges entry {list(bounds)} is not [start, end]")
                selected |= set(np.flatnonzero((relative >= bounds[0]) & (relative < bounds[1])).tolist())
            return selected
        return None
