"""Distillation: a teacher model's metric depth as the labels of the supervised trainer.

How a big model (e.g. Depth Anything V2 ViT-L on a GPU machine) becomes a fast one for the robot: the ``teacher``
section of the training config (:class:`~depth_ros.learning.config.TeacherConfig`) names any checkpoint
:meth:`DepthEstimator.from_checkpoint <depth_ros.estimator.DepthEstimator.from_checkpoint>` loads, and
:class:`~depth_ros.learning.objectives.SupervisedObjective` trains on :class:`TeacherDepth` frames instead of the
sensor's:

1. :func:`teacher_labels` runs the teacher once per training frame on the un-augmented image with
   :meth:`DepthEstimator.infer <depth_ros.estimator.DepthEstimator.infer>` (metres at the image's resolution,
   focal-corrected with the frame's camera, as the node would predict), and caches each map as a float16 ``.npy``
   file (written to a temporary name, then renamed) in ``<run.output_dir>/teacher_depth/<key>/``. The key is a
   hash of the teacher's weights, its estimator settings (input size, precision) and the dataset's identity, so a
   resumed run reuses the maps and another teacher (or dataset) never does; ``teacher.json`` beside the maps says
   what the key stands for. Several Accelerate processes share the frames to compute.
2. :class:`TeacherDepth` hands out the source's frames with ``depth`` replaced (``mode: replace``) or filled where
   the sensor's is invalid (``mode: fill``), so the teacher's depth goes through exactly the resize, crop, flip and
   intrinsics bookkeeping of sensor depth (:class:`~depth_ros.data.augment.TrainTransform`).

Validation is unchanged: it scores against the sensor's depth of the validation frames when they have it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from depth_ros.checkpoints import CheckpointError
from depth_ros.data.frames import RGBDSequence
from depth_ros.estimator import DepthEstimator
from depth_ros.files import atomic_write
from depth_ros.frame import Frame
from depth_ros.learning.config import ConfigError, TrainConfig
from depth_ros.metrics import valid_depth_mask

log = logging.getLogger(__name__)

CACHE = "teacher_depth"


class TeacherDepth(RGBDSequence):
    """``source`` with the cached teacher depth of its training frames (other frames pass through unchanged).

    Frames' ``depth`` is (H, W) float32 metres at the image's resolution: the teacher's (``replace``), or the
    sensor's where it lies inside ``depth_range`` and the teacher's elsewhere (``fill``).

    Args:
        source: the RGB-D (or RGB-only, for ``replace``) sequence.
        folder: the cache folder of this teacher and dataset (``<index:06d>.npy`` float16 maps).
        indices: the frames that get teacher depth (their maps must be in ``folder``).
        mode: ``replace`` or ``fill``.
        depth_range: (min, max) metres of valid sensor depth for ``fill``.

    Raises (on loading a frame):
        FileNotFoundError: a map is missing from the cache.
        ValueError: a map does not match its image's size, or ``fill`` on a frame without sensor depth.
    """

    def __init__(self, source: RGBDSequence, folder: Path, indices: Sequence[int], mode: str,
                 depth_range: tuple[float, float]):
        self.source, self.folder, self.indices = source, Path(folder), frozenset(indices)
        self.mode, self.depth_range = mode, depth_range
        self.stamps, self.names, self.camera = source.stamps, source.names, source.camera
        self.frame_id = source.frame_id

    def path(self, index: int) -> Path:
        """The cache file of frame ``index``."""
        return self.folder / f"{index:06d}.npy"

    def teacher_depth(self, index: int) -> np.ndarray:
        """The cached teacher map of frame ``index``: (H, W) float32 metres."""
        return np.load(self.path(index), allow_pickle=False).astype(np.float32)

    def load(self, index: int) -> Frame:
        frame = self.source[index]
        if index not in self.indices:
            return frame
        teacher = self.teacher_depth(index)
        if teacher.shape != frame.rgb.shape[:2]:
            raise ValueError(f"{self.path(index)}: teacher depth {teacher.shape} does not match the image "
                             f"{frame.rgb.shape[:2]} of {frame.name}; delete {self.folder} to recompute")
        if self.mode == "fill":
            if frame.depth is None:
                raise ValueError(f"{frame.name}: teacher mode fill needs sensor depth; the frame has none")
            teacher = np.where(valid_depth_mask(frame.depth, *self.depth_range), frame.depth, teacher)
        return dataclasses.replace(frame, depth=teacher.astype(np.float32, copy=False))


def load_teacher(cfg: TrainConfig, device: str) -> DepthEstimator:
    """The teacher's estimator as ``cfg.teacher`` describes it.

    Raises:
        CheckpointError: the checkpoint cannot be found, read or matched (message starts ``teacher.checkpoint:``).
        ConfigError: a relative (not metric) teacher, or a bad input size / device.
    """
    teacher = cfg.teacher
    try:
        estimator = DepthEstimator.from_checkpoint(teacher.checkpoint, device=device, precision=teacher.precision,
                                                   input_size=teacher.input_size)
    except CheckpointError as exc:
        raise CheckpointError(f"teacher.checkpoint: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"teacher: {exc}") from None
    if not estimator.is_metric:
        raise ConfigError(f"teacher.checkpoint: {teacher.checkpoint} is a relative-depth model; distillation needs "
                          "metric depth in metres (a metric checkpoint)")
    return estimator


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of a module's state dict: names, dtypes, shapes and bytes of every tensor."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_identity(cfg: TrainConfig, estimator: DepthEstimator) -> dict:
    """What the teacher depth of a frame depends on: the teacher's weights and settings and which frames the
    dataset yields (not the device: CPU and GPU results differ by rounding only)."""
    data = cfg.data
    return {
        "checkpoint": cfg.teacher.checkpoint,
        "weights_sha256": weights_digest(estimator.model),
        "metadata": dataclasses.asdict(estimator.metadata),
        "input_size": estimator.input_size,
        "precision": estimator.precision,
        "focal_correction": estimator.focal_correction,
        "data": {"path": str(Path(data.path).expanduser().resolve()), "format": data.format,
                 "rgb_topic": data.rgb_topic, "depth_topic": data.depth_topic, "info_topic": data.info_topic,
                 "intrinsics": data.intrinsics, "max_dt": data.max_dt},
    }


def teacher_labels(cfg: TrainConfig, source: RGBDSequence, indices: Sequence[int]) -> tuple[TeacherDepth, dict]:
    """Teacher depth for the training frames ``indices`` of ``source``: computed where not cached yet, then served
    through a :class:`TeacherDepth` wrapper. With several Accelerate processes each computes a share of the frames.

    Args:
        cfg: the configuration (``teacher`` set; the cache goes under ``run.output_dir``).
        source: the dataset.
        indices: the training frames.

    Returns:
        (the wrapped sequence, a summary for ``summary.json``: checkpoint, mode, teacher model, cache folder, frames
        computed and reused, seconds).

    Raises:
        CheckpointError / ConfigError: see :func:`load_teacher`.
        ValueError: a frame the teacher cannot read (malformed image or focal length).
    """
    from accelerate import PartialState

    state = PartialState()
    teacher = cfg.teacher
    started = time.monotonic()
    estimator = load_teacher(cfg, teacher.device or str(state.device))
    identity = cache_identity(cfg, estimator)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cfg.run.output_dir) / CACHE / key
    labels = TeacherDepth(source, folder, indices, teacher.mode, (cfg.data.min_depth, cfg.max_depth))
    missing = [i for i in indices if not labels.path(i).is_file()]
    if state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "teacher.json").write_text(json.dumps(identity, indent=2))
    state.wait_for_everyone()
    meta = estimator.metadata
    log.info("teacher %s (%s %s, %d px, %s): %d of %d training frames cached in %s, computing %d",
             teacher.checkpoint, meta.architecture, meta.encoder, estimator.input_size, estimator.device,
             len(indices) - len(missing), len(indices), folder, len(missing))
    with state.split_between_processes(missing) as mine:
        for done, index in enumerate(mine, 1):
            frame = source[index]
            with atomic_write(labels.path(index)) as tmp, tmp.open("wb") as f:
                np.save(f, estimator.infer(frame.rgb, fx=frame.camera.fx).astype(np.float16))
            if done % 50 == 0:
                log.info("teacher depth: %d of %d frames", done, len(mine))
    state.wait_for_everyone()
    del estimator
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    seconds = round(time.monotonic() - started, 1)
    summary = {"checkpoint": teacher.checkpoint, "mode": teacher.mode, "architecture": meta.architecture,
               "encoder": meta.encoder, "max_depth": meta.max_depth, "input_size": identity["input_size"],
               "precision": teacher.precision, "cache": str(folder), "computed_frames": len(missing),
               "cached_frames": len(indices) - len(missing), "seconds": seconds}
    log.info("teacher depth ready for %d frames (%d computed, %.1f s)", len(indices), len(missing), seconds)
    return labels, summary
