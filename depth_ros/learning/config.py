"""Training configuration: one YAML schema for both objectives, read into frozen dataclasses and validated once.

Sections: ``model`` (network and its initialisation), ``data`` (dataset, split, sample preparation), ``optim``
(optimiser, schedule, which parameters train), ``run`` (outputs, precision, cadence), for the self-supervised
objective ``self_supervised`` (pose source, source-frame selection, loss terms) and, for distillation with the
supervised objective, ``teacher`` (the model whose depth becomes the labels). Every numeric value is checked
against its range here, so a bad value stops the run before it starts with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from depth_ros.data import FORMATS, Split
from depth_ros.data.augment import Augmentation
from depth_ros.data.poses import PoseSource
from depth_ros.errors import ConfigError
from depth_ros.estimator import PRECISIONS
from depth_ros.losses import NLL_KINDS
from depth_ros.metrics import CROPS
from depth_ros.models import ARCHITECTURES, DEFAULT_ARCHITECTURE, get_architecture

TRAINABLE = ("full", "head", "norms_biases", "lora", "scale", "uncertainty")


def _check(condition: bool, key: str, requirement: str, value) -> None:
    if not condition:
        raise ConfigError(f"{key} must be {requirement}, got {value!r}")


def _positive(obj, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(value is not None and math.isfinite(value) and value > 0, f"{section}.{name}", "> 0", value)


@dataclass(frozen=True)
class ModelConfig:
    """The network: ``architecture`` (``depth_anything_v2`` or ``packnet``, :data:`depth_ros.models.ARCHITECTURES`)
    and its size variant ``encoder`` (``vits``/``vitb``/``vitl``/``vitg``; ``tiny``/``slim``), a metric head of range
    ``max_depth`` metres. ``init``: ``random`` (no weights), ``encoder`` (only ``pretrained.*`` from ``checkpoint``,
    head random: the Depth Anything V2 recipe) or ``checkpoint`` (all weights from ``checkpoint``, e.g. the
    ``best.pth`` of either trainer).

    ``uncertainty``: the network has a sigma head (log sigma per pixel, :mod:`depth_ros.models`), trained with the
    ``uncertainty_loss`` negative log-likelihood (``gaussian`` or ``laplacian``,
    :func:`depth_ros.losses.depth_nll_loss`) by the supervised objective. With ``init: checkpoint`` from a file
    without a sigma head (an official model, the bundled one) every other weight loads strictly and the sigma head
    starts new; ``optim.trainable: uncertainty`` then trains it alone."""

    encoder: str = "vits"
    max_depth: float = 20.0
    init: str = "random"
    checkpoint: str | None = None
    architecture: str = DEFAULT_ARCHITECTURE
    uncertainty: bool = False
    uncertainty_loss: str = "gaussian"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"model.architecture: {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        try:
            get_architecture(self.architecture, self.encoder, "metric")
        except ValueError as error:
            raise ConfigError(f"model.encoder: {error}") from None
        if self.init not in ("random", "encoder", "checkpoint"):
            raise ConfigError(f"model.init: {self.init!r} is not one of random, encoder, checkpoint")
        if self.uncertainty_loss not in NLL_KINDS:
            raise ConfigError(f"model.uncertainty_loss: {self.uncertainty_loss!r} is not one of {', '.join(NLL_KINDS)}")
        if (self.init == "random") != (self.checkpoint is None):
            raise ConfigError("model.checkpoint: required for init encoder/checkpoint, not allowed for random")
        _positive(self, "model", "max_depth")


@dataclass(frozen=True)
class DataConfig:
    """The dataset (see :func:`depth_ros.data.open_rgbd`), its split and the sample preparation.

    ``max_depth`` None uses ``model.max_depth``; ``eval_crop`` is one of eigen, garg, nyu or None. ``depth_topic``
    None reads a bag without depth (self-supervised training; no validation metrics then).
    """

    path: str
    format: str = "auto"
    depth_scale: float | None = None
    intrinsics: list[float] | None = None
    rgb_topic: str = "/camera/color/image_raw"
    depth_topic: str | None = "/camera/depth/image_raw"
    info_topic: str | None = None
    max_dt: float = 0.02
    split: Split = field(default_factory=Split)
    input_size: int = 518
    min_depth: float = 0.001
    max_depth: float | None = None
    eval_crop: str | None = None
    augmentation: Augmentation = field(default_factory=Augmentation)
    num_workers: int = 0

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"data.format: {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.input_size <= 0:
            raise ConfigError(f"data.input_size must be a positive multiple of 14, got {self.input_size}")
        if self.eval_crop is not None and self.eval_crop not in CROPS:
            raise ConfigError(f"data.eval_crop: {self.eval_crop!r} is not one of {', '.join(CROPS)}")
        if not self.min_depth > 0:
            raise ConfigError(f"data.min_depth must be > 0 m, got {self.min_depth}")
        _positive(self, "data", "max_dt")
        if self.depth_scale is not None:
            _positive(self, "data", "depth_scale")
        if self.max_depth is not None:
            _check(self.max_depth > self.min_depth, "data.max_depth", f"> data.min_depth ({self.min_depth} m)",
                   self.max_depth)
        _check(self.num_workers >= 0, "data.num_workers", ">= 0", self.num_workers)


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation: ``lr`` is the encoder's learning rate, the head gets ``lr * head_lr_factor``; ``schedule`` is
    ``poly`` (power ``poly_power``, to 0) or ``cosine``, after ``warmup_steps`` of linear warm-up. A step is one
    optimiser update of ``batch_size * grad_accum_steps`` samples (per process).

    ``trainable`` selects what is updated (:func:`depth_ros.learning.trainable.prepare_trainable`): ``full`` (all
    weights), ``head`` (the decoder only), ``norms_biases`` (normalisation weights and all biases) or ``lora``
    (low-rank adapters on the encoder's attention and MLP layers, peft, rank ``lora_rank``, scale ``lora_alpha``;
    the adapters are merged into the weights in every saved checkpoint) or ``scale`` (one global depth scale factor,
    the weights fixed: saved checkpoints keep the weights and carry the factor as ``scale``) or ``uncertainty``
    (only the sigma head of a ``model.uncertainty`` network, everything else frozen: depth stays exactly as it was).
    ``clip_grad_norm`` None disables clipping.
    """

    epochs: int = 10
    batch_size: int = 4
    grad_accum_steps: int = 1
    lr: float = 5e-6
    head_lr_factor: float = 10.0
    weight_decay: float = 0.01
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    clip_grad_norm: float | None = 1.0
    trainable: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0

    def __post_init__(self):
        if self.schedule not in ("poly", "cosine"):
            raise ConfigError(f"optim.schedule: {self.schedule!r} is not one of poly, cosine")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"optim.trainable: {self.trainable!r} is not one of {', '.join(TRAINABLE)}")
        for name in ("epochs", "batch_size", "grad_accum_steps", "lora_rank"):
            _check(getattr(self, name) >= 1, f"optim.{name}", ">= 1", getattr(self, name))
        _positive(self, "optim", "lr", "head_lr_factor", "poly_power", "lora_alpha")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "optim.weight_decay", ">= 0",
               self.weight_decay)
        _check(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        if self.clip_grad_norm is not None:
            _positive(self, "optim", "clip_grad_norm")


@dataclass(frozen=True)
class RunConfig:
    """Run control: where outputs go, precision, validation/checkpoint cadence and failure handling.

    ``mixed_precision``: no, fp16 or bf16 (``accelerate launch --mixed_precision`` overrides it). ``val_every_epochs``
    and ``save_every_epochs``: cadence in epochs (states are also saved at the end and on ``--stop-after-steps``).
    """

    output_dir: str
    seed: int = 0
    mixed_precision: str = "no"
    channels_last: bool = False
    val_every_epochs: int = 1
    validate_at_start: bool = True
    save_every_epochs: int = 1
    keep_states: int = 2
    max_bad_steps: int = 3
    log_every_steps: int = 1

    def __post_init__(self):
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"run.mixed_precision: {self.mixed_precision!r} is not one of no, fp16, bf16")
        for name in ("val_every_epochs", "save_every_epochs", "keep_states", "max_bad_steps", "log_every_steps"):
            _check(getattr(self, name) >= 1, f"run.{name}", ">= 1", getattr(self, name))
        _check(self.seed >= 0, "run.seed", ">= 0", self.seed)


@dataclass(frozen=True)
class SelfSupervisedConfig:
    """The photometric view-synthesis objective (:mod:`depth_ros.losses`) and how its samples are chosen.

    Attributes:
        poses: where the camera poses come from (:class:`~depth_ros.data.poses.PoseSource`: odometry + extrinsic,
            a TF chain, PoseStamped or a TUM trajectory); its ``camera_frame`` defaults to the images' frame_id.
        source_offsets: source frames as frame-index offsets from the target (e.g. [-6, 6]), or None with
            ``source_baseline``.
        source_baseline: instead of offsets, the nearest earlier and later frame at least this far (metres) from
            the target camera.
        min_translation: drop a source closer than this (metres) to the target: a stationary camera teaches
            nothing but noise.
        max_rotation: drop a source rotated more than this (degrees) from the target (little overlap).
        automask: Monodepth2's auto-mask of pixels the un-warped source explains.
        smoothness_weight: weight of the edge-aware smoothness term.
        silog_weight: weight of a SiLog term on the frames' depth where the dataset has it (0: none, purely
            self-supervised).
        sparse_depth_points: with ``silog_weight``, keep only this many random valid depth pixels per frame (a
            sparse reference such as a few lidar returns); None keeps all.
        num_scales: use the first (finest) this many depth scales of a multi-scale model (PackNet in training
            mode); None: all of them, as Monodepth2. The loss of each scale is computed at full resolution, so 1
            costs a quarter of 4 (what the online adaptation uses).
    """

    poses: PoseSource = field(default_factory=PoseSource)
    source_offsets: list[int] | None = field(default_factory=lambda: [-6, 6])
    source_baseline: float | None = None
    min_translation: float = 0.01
    max_rotation: float = 15.0
    automask: bool = True
    smoothness_weight: float = 1e-3
    silog_weight: float = 0.0
    sparse_depth_points: int | None = None
    num_scales: int | None = None

    def __post_init__(self):
        if (self.source_offsets is None) == (self.source_baseline is None):
            raise ConfigError("self_supervised: give exactly one of source_offsets and source_baseline")
        if self.source_offsets is not None:
            _check(len(self.source_offsets) > 0 and 0 not in self.source_offsets, "self_supervised.source_offsets",
                   "a non-empty list of non-zero frame offsets", self.source_offsets)
        if self.source_baseline is not None:
            _positive(self, "self_supervised", "source_baseline")
        _check(self.min_translation >= 0, "self_supervised.min_translation", ">= 0 m", self.min_translation)
        _check(0 < self.max_rotation <= 180, "self_supervised.max_rotation", "in (0, 180] degrees", self.max_rotation)
        for name in ("smoothness_weight", "silog_weight"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"self_supervised.{name}", ">= 0", value)
        if self.sparse_depth_points is not None:
            _check(self.sparse_depth_points >= 1, "self_supervised.sparse_depth_points", ">= 1",
                   self.sparse_depth_points)
        if self.num_scales is not None:
            _check(self.num_scales >= 1, "self_supervised.num_scales", ">= 1", self.num_scales)


TEACHER_MODES = ("replace", "fill")


@dataclass(frozen=True)
class TeacherConfig:
    """Distillation: depth labels from a teacher model instead of (or besides) the sensor's
    (:mod:`depth_ros.learning.distill`; supervised objective only).

    The teacher runs once per training frame on the un-augmented image through
    :meth:`depth_ros.estimator.DepthEstimator.infer` (metres at the image's resolution, focal-corrected with the
    frame's camera); its depth is cached under ``<run.output_dir>/teacher_depth/`` and then cropped, flipped and
    resized with the image exactly as sensor depth is. Validation keeps the sensor's depth.

    Attributes:
        checkpoint: anything :meth:`~depth_ros.estimator.DepthEstimator.from_checkpoint` loads (a ``.pth`` /
            ``.safetensors`` file, an official model id such as ``da2-metric-indoor-large``, a transformers folder or
            hub id); it must be a metric model.
        mode: ``replace`` (teacher depth only; the sensor's is not needed, ``data.depth_topic`` may be null) or
            ``fill`` (sensor depth where it is valid, inside ``[data.min_depth, max_depth]``, the teacher's
            elsewhere).
        input_size: the teacher's network short side in px (None: its checkpoint's training size).
        device: where the teacher runs (``cpu``, ``cuda``, ``cuda:N``); None: the training process's device.
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast) for the teacher.
    """

    checkpoint: str
    mode: str = "replace"
    input_size: int | None = None
    device: str | None = None
    precision: str = "fp32"

    def __post_init__(self):
        if self.mode not in TEACHER_MODES:
            raise ConfigError(f"teacher.mode: {self.mode!r} is not one of {', '.join(TEACHER_MODES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"teacher.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.input_size is not None:
            _check(self.input_size > 0, "teacher.input_size", "a positive multiple of the teacher's stride",
                   self.input_size)
        _check(bool(self.checkpoint.strip()), "teacher.checkpoint", "a checkpoint file or model id", self.checkpoint)


@dataclass(frozen=True)
class TrainConfig:
    """A training run: sections ``model``, ``data``, ``optim``, ``run``, (self-supervised runs)
    ``self_supervised`` and (distillation) ``teacher`` of the YAML file."""

    data: DataConfig
    run: RunConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    self_supervised: SelfSupervisedConfig | None = None
    teacher: TeacherConfig | None = None

    def __post_init__(self):
        if self.teacher is not None and self.teacher.mode == "fill" and self.data.depth_topic is None:
            raise ConfigError("teacher.mode: fill mixes sensor and teacher depth but data.depth_topic is null (use "
                              "mode replace for images without depth)")
        if self.optim.trainable == "uncertainty" and not self.model.uncertainty:
            raise ConfigError("optim.trainable: uncertainty trains the sigma head: set model.uncertainty: true")
        multiple = ARCHITECTURES[self.model.architecture].preprocessing.multiple
        if self.data.input_size % multiple:
            raise ConfigError(f"data.input_size must be a positive multiple of {multiple} for "
                              f"{self.model.architecture}, got {self.data.input_size}")

    @property
    def preprocessing(self):
        """The architecture's input size rule and normalisation (:class:`depth_ros.models.Preprocessing`)."""
        return ARCHITECTURES[self.model.architecture].preprocessing

    @property
    def max_depth(self) -> float:
        """Upper bound of valid ground truth in metres (``data.max_depth``, else the model's range)."""
        return self.data.max_depth if self.data.max_depth is not None else self.model.max_depth


def _coerce(hint, value, where: str):
    """``value`` as type ``hint`` (dataclass, optional, list, float, int, bool, str), or a :class:`ConfigError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is typing.Any or hint is str and isinstance(value, str):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float) and not isinstance(value, bool):
        try:
            number = hint(value)  # YAML reads 5e-6 as a string
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if hint is float or float(value) == number:
                return number
    if hint is str:  # e.g. 70: (a mapping in YAML) for a frame range
        raise ConfigError(f"{where}: expected str, got {value!r}: YAML read the text as {type(value).__name__}; "
                          "quote it to keep it as typed (e.g. '70:')")
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _from_dict(cls, values, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(names)})")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers: ``50:10`` stays the string typed (a frame range), as
    YAML 1.2 reads it, instead of the integer 3010."""


def _number_or_text(constructor):
    def construct(loader, node):
        text = loader.construct_scalar(node)
        return text if ":" in text else constructor(loader, node)

    return construct


_Loader.add_constructor("tag:yaml.org,2002:int", _number_or_text(yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor("tag:yaml.org,2002:float", _number_or_text(yaml.SafeLoader.construct_yaml_float))


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read and validate a training YAML file, with ``overrides`` applied first.

    Args:
        path: the YAML file.
        overrides: ``section.key=value`` strings (value parsed as YAML, e.g. ``data.depth_scale=769.23`` or
            ``run.output_dir=../runs/other``), applied in order. In the file and the overrides, ``A:B`` is a string
            (``data.split.train_frames=50:10``), never a YAML 1.1 base-60 number.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not YAML, an unknown or missing key, a malformed override, or a bad value (the message names
            the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        values = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    for override in overrides:
        _apply_override(values, override)
    return config_from_dict(values, str(path))


def _apply_override(values: dict, override: str) -> None:
    key, separator, text = override.partition("=")
    names = key.strip().split(".")
    if not separator or not all(names) or not isinstance(values, dict):
        raise ConfigError(f"override {override!r}: expected section.key=value")
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: the value is not valid YAML") from None
    section = values
    for name in names[:-1]:
        section = section.setdefault(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"override {override!r}: {name} is not a section")
    section[names[-1]] = value


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from nested dicts (the YAML structure); see :func:`load_config`."""
    return _from_dict(TrainConfig, values, where)
