"""Training objectives: what a batch is and what its loss is. The engine (:mod:`depth_ros.learning.engine`) runs
either one with the same loop, states, logs and validation.

* ``silog`` (:class:`SupervisedObjective`): metric depth labels, SiLog on valid pixels (Depth Anything V2 recipe),
  plus the negative log-likelihood of the sigma head for ``model.uncertainty`` networks; the labels may come from a
  teacher model (distillation, :mod:`depth_ros.learning.distill`).
* ``photometric`` (:class:`PhotometricObjective`): no labels; images plus metric camera poses, view synthesis with
  the per-pixel minimum reprojection loss, auto-mask and smoothness (Monodepth2 / PackNet-SfM), optionally with a
  SiLog term on whatever depth the frames carry (sparse or dense).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from depth_ros.data.augment import TrainingFrames, TrainTransform
from depth_ros.data.frames import RGBDSequence
from depth_ros.data.posed import PosedFrames, select_samples
from depth_ros.geometry.transform import PoseLookupError
from depth_ros.learning.config import SelfSupervisedConfig, TrainConfig
from depth_ros.learning.distill import teacher_labels
from depth_ros.losses import depth_nll_loss, self_supervised_loss, silog_loss
from depth_ros.metrics import valid_depth_mask
from depth_ros.models import depth_scales

log = logging.getLogger(__name__)

OBJECTIVES = ("silog", "photometric")


def _network_input(batch: dict[str, torch.Tensor], channels_last: bool) -> torch.Tensor:
    image = batch["image"]
    return image.contiguous(memory_format=torch.channels_last) if channels_last else image


class SupervisedObjective:
    """SiLog against metric depth labels on random square crops (:class:`~depth_ros.data.augment.TrainTransform`).

    The labels are the sensor's depth or, with a ``teacher`` section (distillation, :mod:`depth_ros.learning.distill`),
    a teacher model's depth of the un-augmented training frames (``replace``) or the sensor's filled with it where
    invalid (``fill``); either goes through the same crop and flip as the image. The teacher's depth is computed (or
    read from its cache) here, before the first step.

    Batches: ``image`` (B, 3, S, S) normalised, ``depth`` (B, S, S) metres NaN invalid, ``frame`` (B,).

    Attributes:
        dataset: the training samples (:class:`~depth_ros.data.augment.TrainingFrames`).
        teacher: the teacher's summary for ``summary.json`` (see :func:`~depth_ros.learning.distill.teacher_labels`),
            None without a teacher.

    Raises:
        ValueError: the dataset has no depth (``data.depth_topic`` null) and no teacher replaces it: use the
            photometric objective or a teacher.
        CheckpointError / ConfigError: the teacher cannot be loaded or is not metric.
    """

    name = "silog"

    def __init__(self, cfg: TrainConfig, source: RGBDSequence, train_indices: list[int]):
        if cfg.data.depth_topic is None and (cfg.teacher is None or cfg.teacher.mode != "replace"):
            raise ValueError("supervised training needs depth labels: data.depth_topic is null (train "
                             "self-supervised instead: training/train_self_supervised.py, or distil a teacher: "
                             "a 'teacher' section with mode replace)")
        self.cfg = cfg
        self.teacher = None
        if cfg.teacher is not None:
            source, self.teacher = teacher_labels(cfg, source, train_indices)
        transform = TrainTransform(cfg.data.input_size, cfg.data.augmentation, cfg.preprocessing)
        self.dataset = TrainingFrames(source, train_indices, transform, seed=cfg.run.seed)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
             channels_last: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """SiLog loss of one batch on its valid pixels (+ the sigma head's NLL: statistics silog and nll)."""
        return supervised_loss(model, batch, self.cfg, channels_last)


def supervised_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                    channels_last: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """SiLog loss of one batch (``image`` (B, 3, S, S) normalised, ``depth`` (B, S, S) metres NaN invalid) on the
    pixels inside ``[data.min_depth, max_depth]``; 0-dim, with no statistics.

    With ``model.uncertainty``: SiLog plus :func:`depth_ros.losses.depth_nll_loss` (``model.uncertainty_loss``) of
    the labels under the predicted depth (detached: the NLL trains sigma to describe the depth's error, it does not
    move the depth) and sigma; statistics ``silog`` and ``nll``.
    """
    depth = batch["depth"]
    valid = valid_depth_mask(depth, cfg.data.min_depth, cfg.max_depth)
    x = _network_input(batch, channels_last)
    if not cfg.model.uncertainty:
        prediction = depth_scales(model(x))[0][:, 0].float()
        return silog_loss(prediction, depth, valid), {}
    out, log_sigma = model(x, with_sigma=True)
    prediction = depth_scales(out)[0][:, 0].float()
    silog = silog_loss(prediction, depth, valid)
    nll = depth_nll_loss(prediction.detach(), log_sigma, depth, valid, cfg.model.uncertainty_loss)
    return silog + nll, {"silog": float(silog.detach()), "nll": float(nll.detach())}


def camera_poses(cfg: TrainConfig, source: RGBDSequence) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world poses ``T_world_camera`` at the frames' stamps from the configured pose source.

    Returns:
        ((N, 4, 4) float64 poses, identity where missing; (N,) bool: the frame has a pose).

    Raises:
        ValueError / FileNotFoundError: the pose source cannot be read or covers no frame.
    """
    from depth_ros.data.poses import load_camera_trajectory

    trajectory = load_camera_trajectory(cfg.data.path, cfg.self_supervised.poses, camera_frame=source.frame_id)
    has_pose = trajectory.covers(source.stamps)
    if not has_pose.any():
        raise PoseLookupError(f"{trajectory!r} covers none of the {len(source)} image stamps "
                              f"({source.stamps[0]:.3f}..{source.stamps[-1]:.3f} s)")
    poses = np.tile(np.eye(4), (len(source), 1, 1))
    poses[has_pose] = trajectory.at(source.stamps[has_pose])
    return poses, has_pose


class PhotometricObjective:
    """Self-supervised metric depth from posed images (:func:`depth_ros.losses.self_supervised_loss`).

    Batches: see :class:`~depth_ros.data.posed.PosedFrames`. The network predicts the target's depth in metres;
    a model that returns a list in training mode (multi-scale, e.g. PackNet) gets every scale in the loss.

    Raises:
        ValueError: no pose source section, no usable sample (the message gives the drop reasons), or poses that
            cannot be read.
    """

    name = "photometric"

    def __init__(self, cfg: TrainConfig, source: RGBDSequence, train_indices: list[int]):
        ss = cfg.self_supervised
        if cfg.teacher is not None:
            raise ValueError("teacher: pseudo-labels are for the supervised trainer (training/train_supervised.py); "
                             "remove the teacher section for self-supervised training")
        if ss is None:
            raise ValueError("self-supervised training needs a 'self_supervised' section (pose source, source "
                             "frames): see config/self_supervised_7scenes.yaml")
        self.cfg = cfg
        poses, has_pose = camera_poses(cfg, source)
        selection = select_samples(poses, train_indices, offsets=ss.source_offsets, baseline=ss.source_baseline,
                                   min_translation=ss.min_translation, max_rotation=ss.max_rotation,
                                   has_pose=has_pose)
        log.info("%s (from %d training frames)", selection.report(), len(train_indices))
        if not selection.samples:
            raise ValueError(f"no usable training sample: {selection.report()}; check the pose source, "
                             "source_offsets / source_baseline, min_translation and max_rotation")
        self.selection = selection
        self.dataset = PosedFrames(source, selection.samples, poses, cfg.data.input_size, cfg.preprocessing,
                                   cfg.data.augmentation, ss.sparse_depth_points, seed=cfg.run.seed)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
             channels_last: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """Photometric loss (+ SiLog where depth is given and ``silog_weight`` > 0); statistics for the log."""
        return photometric_loss(model, batch, self.dataset.camera, self.cfg.self_supervised,
                                (self.cfg.data.min_depth, self.cfg.max_depth), channels_last)


def photometric_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], camera, ss: SelfSupervisedConfig,
                     depth_range: tuple[float, float] | None = None,
                     channels_last: bool = False, depth_factor: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The photometric objective of one batch (:func:`~depth_ros.data.posed.pack_sample` layout): the model's depth
    (the first ``ss.num_scales`` scales of a multi-scale model) through
    :func:`depth_ros.losses.self_supervised_loss` with the settings ``ss``, plus its SiLog term on the batch's depth
    when ``ss.silog_weight`` > 0. Shared by the offline trainer and the online adaptation.

    Args:
        model: the depth network (metres out).
        batch: ``image``, ``target``, ``sources``, ``target_to_sources`` and ``depth`` tensors.
        camera: :class:`~depth_ros.geometry.camera.PinholeCamera` of the images at network size.
        ss: the objective's settings.
        depth_range: (min, max) metres of valid depth for the SiLog term (required when it is on).
        channels_last: feed the network channels_last input.
        depth_factor: network output -> the depth that is scored (the online adaptation passes
            :func:`depth_ros.published_depth.depth_factor`, so it adapts what depth_node publishes).

    Returns:
        (0-dim loss, statistics: photometric, smoothness, kept and, with the SiLog term, silog).
    """
    outputs = depth_scales(model(_network_input(batch, channels_last)))[:ss.num_scales]
    depths = [d.float() * depth_factor for d in outputs]
    loss, stats = self_supervised_loss(batch["target"], batch["sources"], depths, camera, batch["target_to_sources"],
                                       ss.automask, ss.smoothness_weight)
    if ss.silog_weight > 0 and torch.isfinite(batch["depth"]).any():
        depth = batch["depth"]
        silog = silog_loss(depths[0][:, 0], depth, valid_depth_mask(depth, *depth_range))
        loss = loss + ss.silog_weight * silog
        stats["silog"] = float(silog.detach())
    return loss, stats


def build_objective(kind: str, cfg: TrainConfig, source: RGBDSequence, train_indices: list[int]):
    """The objective ``kind`` (one of :data:`OBJECTIVES`) over the training frames."""
    if kind not in OBJECTIVES:
        raise ValueError(f"unknown objective {kind!r}; expected one of {', '.join(OBJECTIVES)}")
    return (SupervisedObjective if kind == "silog" else PhotometricObjective)(cfg, source, train_indices)
