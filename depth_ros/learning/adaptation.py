"""Online self-supervised adaptation: keyframes from a moving camera, a replay buffer, guarded weight publishing.

The rclpy-free core of ``adaptation_node`` (:mod:`depth_ros.ros.adaptation_node`), in the spirit of CoMoDA
(Kuznietsov et al., WACV 2021) and MADNet's online adaptation (Tonioni et al., CVPR 2019): each update trains on
the newest sample plus replayed past ones, with the photometric objective of the offline trainer
(:func:`depth_ros.learning.objectives.photometric_loss`, metric poses, so metric depth) and its parameter groups
(:func:`depth_ros.learning.trainable.prepare_trainable`). What is published is an exponential moving average of the
weights, and only after it beat the currently published weights on held-out keyframes:

1. **Keyframes.** A frame becomes a keyframe when the camera moved at least ``min_translation`` and rotated at most
   ``max_rotation`` since the previous one. Frames whose pose jumps faster than ``max_speed`` /
   ``max_angular_speed``, whose image equals the previous frame's or the last keyframe's although the camera moved
   (a frozen driver), that are nearly
   black or texture-less, or whose camera differs from the first one are rejected and counted by reason.
2. **Samples.** Three consecutive keyframes make a sample: the middle one is the target, its neighbours the
   sources. Every ``holdout_every``-th sample is held out for validation (the newest ``holdout_size`` kept); the
   others enter a replay buffer of ``buffer_size`` samples kept by reservoir sampling (a uniform sample of the whole
   drive, so the last corridor does not crowd out the rest).
3. **Guards.** :meth:`OnlineAdapter.check` scores the moving average and the published weights on the held-out
   samples: photometric loss and the odometry-consistent scale (the depth scale factor that best explains the
   metric motion). It publishes only a candidate that is better on both counts; a non-finite candidate or one worse
   than the starting weights by ``divergence_factor`` is rolled back to the last published weights.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from depth_ros.checkpoints import CheckpointMetadata, build_model, save_checkpoint
from depth_ros.data.posed import network_image, pack_sample
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import motion, relative_pose
from depth_ros.learning.config import TRAINABLE, OptimConfig, SelfSupervisedConfig
from depth_ros.learning.objectives import photometric_loss
from depth_ros.learning.trainable import ScaledDepth, build_optimizer, deployable_state_dict, prepare_trainable
from depth_ros.losses import self_supervised_loss
from depth_ros.models import depth_scales
from depth_ros.published_depth import depth_factor

log = logging.getLogger(__name__)

LATEST = "latest.pth"
RESTART_AFTER = 1.0  # s between two frames (either way) after which the keyframe chain restarts
FROZEN_DIFFERENCE = 1e-3  # mean absolute difference (images in [0, 1]) below which two frames are the same image
FROZEN_MIN_MOTION = 0.002  # m of camera motion between two frames beyond which the same image means a frozen driver
SCALE_SEARCH = (0.5, 2.0)  # range of the depth scale factor searched on held-out data
SCALE_TOLERANCE = 0.005  # its precision, in log scale (0.5 %)


@dataclass(frozen=True)
class AdaptationConfig:
    """Parameters of the online adaptation (the ``adaptation_node`` parameters of the same names).

    Attributes:
        min_translation: metres the camera must move between keyframes.
        max_rotation: degrees the camera may rotate between keyframes (more restarts the keyframe chain).
        max_speed: m/s; a faster pose change between two frames is a pose jump (rejected).
        max_angular_speed: deg/s; likewise for rotation.
        buffer_size: replay buffer capacity in samples.
        holdout_every: every n-th sample is held out for the guards.
        holdout_size: held-out samples kept (the newest).
        batch_size: samples per update (the newest plus replayed ones).
        trainable: which parameters adapt, as the offline trainer: ``scale`` (the default and cheapest: one global
            depth factor, the weights fixed, so the structure of the depth maps cannot change and an update costs
            a forward pass), ``norms_biases``, ``head``, ``lora`` or ``full``.
        lr: learning rate (the decoder/head gets ``lr * head_lr_factor``; for ``scale`` a step in log scale, so
            1e-2 moves the factor about 1 % per update; the weight groups want ~1e-4).
        head_lr_factor: head learning-rate factor.
        ema_decay: weight of the old average per update in the exponential moving average.
        min_updates_between_checks: updates between two guarded publish attempts.
        divergence_factor: roll back when the candidate's held-out loss exceeds the starting weights' by this factor.
        scale_tolerance: a candidate may not move the odometry-consistent scale further from 1 than the published
            weights by more than this (relative).
        automask, smoothness_weight: the photometric objective's settings.
    """

    min_translation: float = 0.03
    max_rotation: float = 15.0
    max_speed: float = 3.0
    max_angular_speed: float = 180.0
    buffer_size: int = 256
    holdout_every: int = 8
    holdout_size: int = 8
    batch_size: int = 4
    trainable: str = "scale"
    lr: float = 1e-2
    head_lr_factor: float = 10.0
    ema_decay: float = 0.9
    min_updates_between_checks: int = 10
    divergence_factor: float = 1.5
    scale_tolerance: float = 0.02
    automask: bool = True
    smoothness_weight: float = 1e-3

    def __post_init__(self):
        checks = {
            "min_translation": self.min_translation >= 0, "max_rotation": 0 < self.max_rotation <= 180,
            "max_speed": self.max_speed > 0, "max_angular_speed": self.max_angular_speed > 0,
            "buffer_size": self.buffer_size >= 1, "holdout_every": self.holdout_every >= 2,
            "holdout_size": self.holdout_size >= 1, "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0 and math.isfinite(self.lr), "head_lr_factor": self.head_lr_factor > 0,
            "ema_decay": 0 <= self.ema_decay < 1, "min_updates_between_checks": self.min_updates_between_checks >= 1,
            "divergence_factor": self.divergence_factor > 1, "scale_tolerance": self.scale_tolerance >= 0,
            "smoothness_weight": self.smoothness_weight >= 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"adaptation parameter {name} is out of range: {getattr(self, name)!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"adaptation parameter trainable: {self.trainable!r} is not one of {', '.join(TRAINABLE)}")


@dataclass
class _Keyframe:
    rgb: np.ndarray  # network-size float32 RGB in [0, 1]
    pose: np.ndarray  # T_world_camera
    stamp: float


@dataclass(frozen=True)
class _Sample:
    """A training sample as kept in the replay buffer: network-size RGB as uint8 (a quarter of the float32 tensors it
    becomes, :meth:`tensors`) and the camera poses (``T_world_camera``)."""

    target: np.ndarray  # (h, w, 3) uint8
    sources: tuple[np.ndarray, ...]  # S images like target
    target_pose: np.ndarray  # (4, 4)
    source_poses: np.ndarray  # (S, 4, 4)

    def tensors(self, preprocessing) -> dict[str, torch.Tensor]:
        """The :func:`~depth_ros.data.posed.pack_sample` layout of the sample."""
        def rgb(image):
            return image.astype(np.float32) / 255.0

        return pack_sample(rgb(self.target), [rgb(s) for s in self.sources], self.target_pose, self.source_poses,
                           preprocessing)


@dataclass(frozen=True)
class Weights:
    """One state of the adapted model: the plain network weights and a global depth factor (the ``scale`` group's
    learnt factor; 1 for the other groups). Published as the weights with the metadata's ``scale`` times it.

    Attributes:
        state: the network's state dict (plain model layout, CPU tensors).
        scale: depth factor relative to the starting checkpoint.
    """

    state: dict[str, torch.Tensor]
    scale: float = 1.0


@dataclass(frozen=True)
class Score:
    """How well weights explain the held-out keyframes.

    Attributes:
        loss: mean photometric loss (lower is better).
        scale: odometry-consistent scale ratio: predicted depth / the depth that best explains the metric motion
            (1 is metric; 1.3 means 30 % too far); NaN when not searched.
    """

    loss: float
    scale: float


class OnlineAdapter:
    """Adapts a depth checkpoint online from posed frames; thread-safe between :meth:`offer` and :meth:`update`.

    Args:
        checkpoint: starting weights (a file or model id :func:`depth_ros.checkpoints.build_model` loads).
        output_dir: where published weights go (``latest.pth``, atomic writes, same format and metadata).
        config: the adaptation parameters.
        input_size: network short side; None: the checkpoint's training size.
        device: torch device string.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        ValueError: bad configuration.
    """

    def __init__(self, checkpoint, output_dir: str | Path, config: AdaptationConfig = AdaptationConfig(),
                 input_size: int | None = None, device: str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        model, metadata = build_model(checkpoint)
        if metadata.head != "metric":
            raise ValueError(f"{checkpoint}: online adaptation needs a metric model, this one is {metadata.head}")
        self.metadata: CheckpointMetadata = replace(metadata, input_size=input_size or metadata.input_size)
        self.output_dir = Path(output_dir)
        self._optim = OptimConfig(lr=config.lr, head_lr_factor=config.head_lr_factor, trainable=config.trainable,
                                  weight_decay=0.0)
        self._objective = SelfSupervisedConfig(automask=config.automask, smoothness_weight=config.smoothness_weight,
                                               num_scales=1)  # full resolution only: a quarter of the cost
        model = model.to(self.device)
        self._scorer = ScaledDepth(copy.deepcopy(model)).eval()  # scores weight states
        self.model, groups = prepare_trainable(model, self._optim)
        self.model.train()
        self._trainable = [p for g in groups for p in g["params"]]
        self.optimizer = build_optimizer(groups, self._optim)
        self._ema = [p.detach().clone() for p in self._trainable]
        # the frozen weights never change, so the trainable values identify a training state (LoRA included)
        self._start_values = [p.detach().clone() for p in self._trainable]
        self._published_values = self._start_values
        self.start = self._current_weights()
        self.published = self.start
        self._lock = threading.Lock()
        self.camera: PinholeCamera | None = None  # of the original images
        self._network_camera: PinholeCamera | None = None
        self._last: _Keyframe | None = None  # last accepted frame
        self._chain: deque[_Keyframe] = deque(maxlen=3)
        self.replay: list[_Sample] = []
        self.holdout: deque[_Sample] = deque(maxlen=config.holdout_size)
        self._newest: _Sample | None = None  # the latest sample, in every update's batch
        self._rng = np.random.default_rng(0)
        self.counts = Counter()
        self.samples_seen = 0
        self.updates = 0
        self._updates_at_check = 0
        self.start_score: Score | None = None
        self.published_score: Score | None = None
        self.replaced_score: Score | None = None  # at the last publish: the replaced weights, same held-out samples
        self.last_loss = math.nan

    # -- frames ----------------------------------------------------------------------------------------------------

    def offer(self, rgb: np.ndarray, camera: PinholeCamera, pose: np.ndarray, stamp: float) -> str:
        """Consider one posed frame; returns what happened to it (``keyframe``, ``sample``, ``not moved``, or a
        rejection reason), also counted in :attr:`counts`.

        Args:
            rgb: (H, W, 3) uint8 RGB image.
            camera: its intrinsics (at H x W).
            pose: (4, 4) ``T_world_camera`` of the image (camera optical frame to a fixed frame, metres), e.g. odom.
            stamp: image stamp in seconds.
        """
        outcome = self._offer(rgb, camera, np.asarray(pose, dtype=np.float64), float(stamp))
        self.counts[outcome] += 1
        return outcome

    def _offer(self, rgb, camera, pose, stamp) -> str:
        if self.camera is None:
            self.camera = camera
        elif camera != self.camera:
            return "rejected: camera_info mismatch"
        if not np.isfinite(pose).all():
            return "rejected: invalid pose"
        small, self._network_camera = network_image(rgb, camera, self.metadata.input_size, self.metadata.preprocessing)
        if small.mean() < 0.03 or small.std() < 0.01:
            return "rejected: dark or texture-less image"
        last = self._last
        if last is not None and abs(stamp - last.stamp) > RESTART_AFTER:
            # a long pause, a lasting pose jump or time going back (a looped bag): start afresh
            self._chain.clear()
            last = None
        if last is not None:
            dt = stamp - last.stamp
            if dt <= 0:
                return "rejected: stamp not increasing"
            translation, angle = motion(relative_pose(last.pose, pose))
            if translation / dt > self.config.max_speed or angle / dt > self.config.max_angular_speed:
                self._chain.clear()  # the next frames are measured against the last good one
                return "rejected: pose jump"
            if translation >= FROZEN_MIN_MOTION and _same_image(small, last.rgb):
                return "rejected: image frozen while moving"
        self._last = _Keyframe(small, pose, stamp)
        if self._chain:
            keyframe = self._chain[-1]
            translation, angle = motion(relative_pose(keyframe.pose, pose))
            if translation < self.config.min_translation:
                return "not moved"
            if _same_image(small, keyframe.rgb):  # slow motion: caught once it adds up to a keyframe's distance
                return "rejected: image frozen while moving"
            if angle > self.config.max_rotation:
                self._chain.clear()
        self._chain.append(self._last)
        if len(self._chain) < 3:
            return "keyframe"
        self._add_sample(self._sample(*self._chain))
        return "sample"

    def _sample(self, before: _Keyframe, target: _Keyframe, after: _Keyframe) -> _Sample:
        def compact(rgb):
            return np.round(rgb * 255.0).astype(np.uint8)

        return _Sample(compact(target.rgb), (compact(before.rgb), compact(after.rgb)), target.pose,
                       np.stack([before.pose, after.pose]))

    def _batch(self, samples: list[_Sample]) -> dict[str, torch.Tensor]:
        tensors = [s.tensors(self.metadata.preprocessing) for s in samples]
        return {key: torch.stack([t[key] for t in tensors]).to(self.device) for key in tensors[0]}

    def _add_sample(self, sample: _Sample) -> None:
        with self._lock:
            self.samples_seen += 1
            if self.samples_seen % self.config.holdout_every == 0:
                self.holdout.append(sample)
            elif len(self.replay) < self.config.buffer_size:
                self.replay.append(sample)
            else:  # reservoir sampling: every sample so far is kept with equal probability
                slot = int(self._rng.integers(0, self.samples_seen))
                if slot < self.config.buffer_size:
                    self.replay[slot] = sample
            self._newest = sample

    # -- training --------------------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True once the replay buffer holds a full batch."""
        return len(self.replay) >= self.config.batch_size

    def update(self) -> float | None:
        """One optimiser step on the newest sample plus replayed ones, then the moving-average update.

        Returns:
            The batch loss, or None when not :meth:`ready` or the loss was not finite (the step is skipped, counted
            as ``non-finite loss``, and the training weights roll back to the published ones).
        """
        with self._lock:
            if not self.ready():
                return None
            picks = self._rng.choice(len(self.replay), self.config.batch_size - 1, replace=False).tolist()
            samples = [self._newest] + [self.replay[i] for i in picks]
        batch = self._batch(samples)
        loss, _ = photometric_loss(self.model, batch, self._network_camera, self._objective,
                                   depth_factor=self._published_factor())
        if not torch.isfinite(loss):  # the training weights diverged: back to the last published ones
            self.counts["non-finite loss"] += 1
            self.counts["rolled back"] += 1
            self.optimizer.zero_grad()
            self._restore(self._published_values)
            log.warning("non-finite adaptation loss: rolled back to the published weights")
            return None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._trainable, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            for average, p in zip(self._ema, self._trainable, strict=True):
                average.mul_(self.config.ema_decay).add_(p.detach(), alpha=1 - self.config.ema_decay)
        self.updates += 1
        self.last_loss = float(loss.detach())
        return self.last_loss

    def candidate(self) -> Weights:
        """The moving-average weights (what would be published)."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self._trainable]
            self._set_trainable(self._ema)
            weights = self._current_weights()
            self._set_trainable(live)
        return weights

    def _current_weights(self) -> Weights:
        return Weights(_copy_state(deployable_state_dict(self.model)),
                       self.model.scale if isinstance(self.model, ScaledDepth) else 1.0)

    def checkpoint_metadata(self, weights: Weights) -> CheckpointMetadata:
        """The metadata ``weights`` are published with: the starting checkpoint's, its ``scale`` times the factor."""
        return replace(self.metadata, scale=self.metadata.scale * weights.scale)

    def _published_factor(self) -> float:
        """Network output -> the depth depth_node publishes for this camera (learnt scale of the start, focal ratio
        at network input; :func:`depth_ros.published_depth.depth_factor`): the loss and the guard see exactly that."""
        return depth_factor(self.metadata, self._network_camera.fx)

    @torch.no_grad()
    def _set_trainable(self, values: list[torch.Tensor]) -> None:
        for p, value in zip(self._trainable, values, strict=True):
            p.copy_(value)

    # -- guards ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def scoring_model(self, weights: Weights) -> torch.nn.Module:
        """A model (eval mode) that predicts as ``weights`` do, e.g. :attr:`published`; reused by every call, so use
        it from one thread (the training thread)."""
        self._scorer.model.load_state_dict(weights.state)
        self._scorer.log_scale.fill_(math.log(weights.scale))
        return self._scorer

    @torch.no_grad()
    def score(self, weights: Weights, search_scale: bool = True) -> Score | None:
        """Held-out photometric loss and odometry-consistent scale of ``weights`` (NaN without ``search_scale``,
        which saves ~12 loss evaluations); None without held-out samples."""
        with self._lock:
            holdout = list(self.holdout)
        if not holdout:
            return None
        scorer = self.scoring_model(weights)
        batch = self._batch(holdout)
        depth = depth_scales(scorer(batch["image"]))[0].float() * self._published_factor()

        def loss_at(log_factor: float) -> float:
            loss = float(self_supervised_loss(batch["target"], batch["sources"], [depth * math.exp(log_factor)],
                                              self._network_camera, batch["target_to_sources"], self.config.automask,
                                              self.config.smoothness_weight)[0])
            return loss if math.isfinite(loss) else math.inf

        loss = loss_at(0.0)
        if not math.isfinite(loss):
            return Score(loss=math.nan, scale=1.0)
        if not search_scale:
            return Score(loss=loss, scale=math.nan)
        # Brent's bounded search (scipy) for the factor that best explains the metric motion: ~12 evaluations
        search = minimize_scalar(loss_at, bounds=tuple(math.log(b) for b in SCALE_SEARCH), method="bounded",
                                 options={"xatol": SCALE_TOLERANCE})
        return Score(loss=loss, scale=math.exp(-search.x) if search.fun < loss else 1.0)

    def check(self) -> str:
        """Guarded publishing: ``published`` (written to ``output_dir/latest.pth``), ``kept`` (not better),
        ``rolled back`` (diverged: training weights reset to the published ones) or ``waiting`` (too few updates or
        no held-out sample yet). Counted in :attr:`counts`."""
        if self.updates - self._updates_at_check < self.config.min_updates_between_checks or not self.holdout:
            return "waiting"
        self._updates_at_check = self.updates
        candidate_weights = self.candidate()
        candidate, published = self.score(candidate_weights), self.score(self.published)
        # the start only bounds divergence: its loss is enough
        start = published if self.published is self.start else self.score(self.start, search_scale=False)
        self.start_score, self.published_score = start, published
        if not math.isfinite(candidate.loss) or candidate.loss > start.loss * self.config.divergence_factor:
            self._restore(self._published_values)
            outcome = "rolled back"
            log.warning("adaptation diverged (held-out loss %.4f, start %.4f): rolled back to the published weights",
                        candidate.loss, start.loss)
        elif candidate.loss < published.loss and \
                abs(math.log(candidate.scale)) <= abs(math.log(published.scale)) + self.config.scale_tolerance:
            self.replaced_score = published
            self.published, self.published_score = candidate_weights, candidate
            self._published_values = [v.clone() for v in self._ema]
            self.publish(candidate_weights)
            outcome = "published"
        else:
            outcome = "kept"
        self.counts[outcome] += 1
        return outcome

    def publish(self, weights: Weights) -> Path:
        """Write ``weights`` as ``output_dir/latest.pth`` (atomic; metadata: :meth:`checkpoint_metadata`)."""
        return save_checkpoint(self.output_dir / LATEST, weights.state, self.checkpoint_metadata(weights))

    def reset(self) -> Path:
        """Back to the starting weights: training state, moving average and published weights; publishes them."""
        self._restore(self._start_values)
        self.published, self.published_score = self.start, None
        self._published_values = self._start_values
        self.counts["resets"] += 1
        return self.publish(self.start)

    def _restore(self, values: list[torch.Tensor]) -> None:
        """Training weights and moving average set to ``values``; a fresh optimiser (its moments belong to the
        abandoned trajectory)."""
        self._set_trainable(values)
        with torch.no_grad():
            for average, value in zip(self._ema, values, strict=True):
                average.copy_(value)
        self.optimizer = build_optimizer([{"params": g["params"], "lr": g["lr"]} for g in self.optimizer.param_groups],
                                         self._optim)


def _same_image(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> bool:
    """Two network images (same shape, values in [0, 1]) that differ by less than :data:`FROZEN_DIFFERENCE`."""
    return float(np.abs(a - b).mean()) < FROZEN_DIFFERENCE


def _copy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in state.items()}
