"""Posed training samples for self-supervised depth: a target frame, its source frames and the relative poses.

Frame selection follows the known failure modes of photometric training: a source too close to the target (a
stationary camera) teaches nothing but noise, one rotated too far shares little of the view. Every frame that does
not become a sample is counted under its reason, so a user sees why a recording gives fewer samples than frames.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from depth_ros.data.augment import Augmentation, color_jitter
from depth_ros.data.frames import RGBDSequence
from depth_ros.estimator import resize_to_network
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import motion, relative_pose
from depth_ros.models import Preprocessing

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PosedSample:
    """One training sample: frame indices of the target and its sources (into the sequence)."""

    target: int
    sources: tuple[int, ...]


@dataclass
class SampleSelection:
    """The chosen samples and, per reason, how many candidate targets were dropped."""

    samples: list[PosedSample]
    dropped: Counter = field(default_factory=Counter)

    def report(self) -> str:
        """One line: samples kept and drop reasons with counts."""
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.dropped.items())) or "none"
        return f"{len(self.samples)} training samples; dropped targets: {reasons}"


def select_samples(poses: np.ndarray, candidates: Sequence[int], *, offsets: Sequence[int] | None = None,
                   baseline: float | None = None, min_translation: float = 0.01,
                   max_rotation: float = 15.0, has_pose: np.ndarray | None = None) -> SampleSelection:
    """Choose source frames for each candidate target frame.

    Args:
        poses: (N, 4, 4) camera-to-world poses ``T_world_camera`` of all N frames of the sequence (metres); rows
            where ``has_pose`` is False are ignored.
        candidates: target frame indices to consider (e.g. the training split); sources come from the same set.
        offsets: source frames at these index offsets from the target (e.g. (-6, 6)); all must be usable.
        baseline: instead of offsets, the nearest earlier and the nearest later frame whose camera is at least
            this many metres from the target's (both must exist).
        min_translation: a source closer than this (metres) to the target is unusable (stationary camera).
        max_rotation: a source rotated more than this (degrees) from the target is unusable.
        has_pose: (N,) bool, frames with a pose; None: all.

    Returns:
        The samples (targets in order) and the drop counts by reason: ``no pose``, ``source outside the split``,
        ``stationary`` (a source moved less than ``min_translation``), ``rotated`` (beyond ``max_rotation``).

    Raises:
        ValueError: neither or both of ``offsets`` and ``baseline``.
    """
    if (offsets is None) == (baseline is None):
        raise ValueError("select_samples: give offsets or baseline")
    count = len(poses)
    usable = np.ones(count, bool) if has_pose is None else np.asarray(has_pose, bool)
    allowed = np.zeros(count, bool)
    allowed[list(candidates)] = True
    allowed &= usable
    selection = SampleSelection([])
    for target in candidates:
        if not usable[target]:
            selection.dropped["no pose"] += 1
            continue
        if offsets is not None:
            sources = [target + k for k in offsets]
            if not all(0 <= s < count and allowed[s] for s in sources):
                selection.dropped["source outside the split"] += 1
                continue
        else:
            sources = []
            for step in (-1, 1):
                s = target + step
                while 0 <= s < count and allowed[s] and motion(relative_pose(poses[s], poses[target]))[0] < baseline:
                    s += step
                if 0 <= s < count and allowed[s]:
                    sources.append(s)
            if len(sources) < 2:
                selection.dropped["source outside the split"] += 1
                continue
        moves = [motion(relative_pose(poses[s], poses[target])) for s in sources]
        if any(translation < min_translation for translation, _ in moves):
            selection.dropped["stationary"] += 1
        elif any(angle > max_rotation for _, angle in moves):
            selection.dropped["rotated"] += 1
        else:
            selection.samples.append(PosedSample(int(target), tuple(int(s) for s in sources)))
    return selection


class PosedFrames(torch.utils.data.Dataset):
    """Samples of a sequence at network size for the photometric objective.

    Items (S = number of sources, h x w = the network size of the sequence's images):
        ``image`` (3, h, w) float32 network input of the target (normalised as ``preprocessing`` says;
        colour-jittered when ``augmentation`` is given, the loss images are not), ``target`` (3, h, w) float32
        RGB in [0, 1], ``sources`` (S, 3, h, w) float32 RGB in [0, 1], ``target_to_sources`` (S, 4, 4) float32
        ``T_source_target``, ``depth`` (h, w) float32 metres of the target, NaN invalid (all NaN without depth;
        nearest-neighbour resized; with ``sparse_depth_points`` only that many random valid pixels kept) and
        ``frame`` (the target's index).

    Args:
        source: the image sequence (depth optional).
        samples: from :func:`select_samples`.
        poses: (N, 4, 4) ``T_world_camera`` of every frame of ``source``.
        input_size: network short side (a multiple of ``preprocessing.multiple``); the images are resized whole,
            never cropped, so the intrinsics stay :attr:`camera` for every sample.
        preprocessing: the architecture's size rule and normalisation (``TrainConfig.preprocessing``).
        augmentation: colour jitter of the network input (flips would mirror the geometry; they are not applied).
        sparse_depth_points: keep only this many valid depth pixels (a sparse reference); None: all.
        seed: base seed of the per-(epoch, item) randomness.
    """

    def __init__(self, source: RGBDSequence, samples: Sequence[PosedSample], poses: np.ndarray, input_size: int,
                 preprocessing: Preprocessing, augmentation: Augmentation | None = None,
                 sparse_depth_points: int | None = None, seed: int = 0):
        self.source, self.samples, self.poses = source, list(samples), np.asarray(poses, dtype=np.float64)
        self.input_size, self.preprocessing, self.augmentation = input_size, preprocessing, augmentation
        self.sparse_depth_points, self.seed, self.epoch = sparse_depth_points, seed, 0
        blank = np.zeros((source.camera.height, source.camera.width, 3), np.uint8)
        self.camera: PinholeCamera = network_image(blank, source.camera, input_size, preprocessing)[1]

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _rgb(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        frame = self.source[index]
        rgb, _ = network_image(frame.rgb, frame.camera, self.input_size, self.preprocessing)
        depth = None
        if frame.depth is not None:
            depth = cv2.resize(frame.depth, (self.camera.width, self.camera.height), interpolation=cv2.INTER_NEAREST)
        return rgb, depth

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        sample = self.samples[i]
        target, depth = self._rgb(sample.target)
        if depth is not None and self.sparse_depth_points is not None:
            valid = np.flatnonzero(np.isfinite(depth))
            keep = rng.choice(valid, min(self.sparse_depth_points, len(valid)), replace=False)
            sparse = np.full(depth.size, np.nan, np.float32)
            sparse[keep] = depth.reshape(-1)[keep]
            depth = sparse.reshape(depth.shape)
        packed = pack_sample(target, [self._rgb(s)[0] for s in sample.sources], self.poses[sample.target],
                             self.poses[list(sample.sources)], self.preprocessing, depth,
                             color_jitter(target, rng, self.augmentation) if self.augmentation else None)
        packed["frame"] = torch.tensor(sample.target)
        return packed


def network_image(rgb: np.ndarray, camera: PinholeCamera, input_size: int,
                  preprocessing: Preprocessing) -> tuple[np.ndarray, PinholeCamera]:
    """An image at network size for the photometric objective: (h, w, 3) float32 RGB in [0, 1] (bicubic, as the
    estimator's :func:`~depth_ros.estimator.resize_to_network`) and the camera at that size."""
    small = np.clip(resize_to_network(rgb, input_size, preprocessing), 0, 1)
    return small, camera.resized(small.shape[1], small.shape[0])


def pack_sample(target: np.ndarray, sources: Sequence[np.ndarray], target_pose: np.ndarray,
                source_poses: np.ndarray, preprocessing: Preprocessing, depth: np.ndarray | None = None,
                network_input: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """One photometric training sample as tensors (the layout of :class:`PosedFrames` items, without ``frame``).

    Args:
        target: (h, w, 3) float32 RGB in [0, 1] at network size (:func:`network_image`).
        sources: S images like ``target``.
        target_pose: (4, 4) ``T_world_camera`` of the target.
        source_poses: (S, 4, 4) ``T_world_camera`` of the sources.
        preprocessing: normalisation of the network input.
        depth: (h, w) float32 metres of the target, NaN invalid; None: all NaN.
        network_input: the image the network sees (e.g. colour-jittered ``target``); None: ``target``.

    Returns:
        ``image`` (3, h, w) normalised network input, ``target`` (3, h, w), ``sources`` (S, 3, h, w),
        ``target_to_sources`` (S, 4, 4) float32 ``T_source_target``, ``depth`` (h, w).
    """
    def chw(rgb):
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))

    network_input = target if network_input is None else network_input
    if depth is None:
        depth = np.full(target.shape[:2], np.nan, np.float32)
    poses = relative_pose(np.asarray(source_poses, dtype=np.float64), np.asarray(target_pose)[None])
    return {
        "image": chw((network_input - np.asarray(preprocessing.mean, np.float32))
                     / np.asarray(preprocessing.std, np.float32)),
        "target": chw(target),
        "sources": torch.stack([chw(s) for s in sources]),
        "target_to_sources": torch.from_numpy(poses.astype(np.float32)),
        "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
    }
