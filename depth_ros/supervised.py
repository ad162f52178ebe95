"""Supervised metric fine-tuning of Depth Anything V2 on RGB-D data (bags, TUM folders, NYU HDF5) with Accelerate.

Usage::

    python training/train_supervised.py --config config/train_7scenes.yaml [--resume] [--stop-after-steps N]
    accelerate launch training/train_supervised.py --config ...      # several GPUs, fp16/bf16 from the config

Recipe (Yang et al., Depth Anything V2, 2024, metric fine-tuning): SiLog loss (lambda 0.5) on valid pixels, AdamW
(weight decay 0.01) with a 10x higher learning rate for the randomly initialised DPT head than for the encoder,
linear warm-up then polynomial (power 0.9) or cosine decay, gradient accumulation and clipping. A non-finite loss is
logged with its batch's frames and the step is skipped; ``max_bad_steps`` in a row stop the run.

Outputs in ``run.output_dir``: ``states/step_NNNNNNN`` (``accelerator.save_state``, written to ``*.tmp`` and renamed,
the newest ``keep_states`` kept; ``--resume`` continues exactly from the newest), ``best.pth`` (best validation
AbsRel, official layout + :class:`CheckpointMetadata`, loadable by ``DepthEstimator`` and ``depth_node``),
``log.csv``, ``tensorboard/``, ``curves.png``, ``summary.json`` (baseline, before, best, final validation metrics),
``config.yaml`` (the configuration used).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from depth_ros.checkpoints import (
    CheckpointError,
    CheckpointMetadata,
    build_model,
    load_checkpoint,
    network_focal,
    save_checkpoint,
)
from depth_ros.data import FORMATS, RGBDSequence, Split, open_rgbd
from depth_ros.data.augment import Augmentation, EpochShuffleSampler, TrainingFrames, TrainTransform
from depth_ros.estimator import DepthEstimator
from depth_ros.losses import silog_loss
from depth_ros.metrics import CROPS, METRIC_NAMES, evaluate_frames, mean_metrics, median_baseline, valid_depth_mask
from depth_ros.models import ENCODERS, DepthAnythingV2

log = logging.getLogger(__name__)

STATES = "states"
BEST = "best.pth"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key and the problem."""


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run stops (the last saved state stays usable)."""


# ----------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``init``: ``random`` (no weights), ``encoder`` (only ``pretrained.*`` from ``checkpoint``, head
    random: the Depth Anything V2 recipe) or ``checkpoint`` (all weights from ``checkpoint``)."""

    encoder: str = "vits"
    max_depth: float = 20.0
    init: str = "random"
    checkpoint: str | None = None

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ConfigError(f"model.encoder: {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if self.init not in ("random", "encoder", "checkpoint"):
            raise ConfigError(f"model.init: {self.init!r} is not one of random, encoder, checkpoint")
        if (self.init == "random") != (self.checkpoint is None):
            raise ConfigError("model.checkpoint: required for init encoder/checkpoint, not allowed for random")
        if not self.max_depth > 0:
            raise ConfigError(f"model.max_depth must be > 0 m, got {self.max_depth}")


@dataclass(frozen=True)
class DataConfig:
    """The dataset (see :func:`depth_ros.data.open_rgbd`), its split and the sample preparation.

    ``max_depth`` None uses ``model.max_depth``; ``eval_crop`` is one of eigen, garg, nyu or None.
    """

    path: str
    format: str = "auto"
    depth_scale: float | None = None
    intrinsics: list[float] | None = None
    rgb_topic: str = "/camera/color/image_raw"
    depth_topic: str = "/camera/depth/image_raw"
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
        if self.input_size <= 0 or self.input_size % 14:
            raise ConfigError(f"data.input_size must be a positive multiple of 14, got {self.input_size}")
        if self.eval_crop is not None and self.eval_crop not in CROPS:
            raise ConfigError(f"data.eval_crop: {self.eval_crop!r} is not one of {', '.join(CROPS)}")
        if not self.min_depth > 0:
            raise ConfigError(f"data.min_depth must be > 0 m, got {self.min_depth}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation: ``lr`` is the encoder's learning rate, the head gets ``lr * head_lr_factor``; ``schedule`` is
    ``poly`` (power ``poly_power``, to 0) or ``cosine``, after ``warmup_steps`` of linear warm-up. A step is one
    optimiser update of ``batch_size * grad_accum_steps`` samples (per process)."""

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

    def __post_init__(self):
        if self.schedule not in ("poly", "cosine"):
            raise ConfigError(f"optim.schedule: {self.schedule!r} is not one of poly, cosine")
        for name in ("epochs", "batch_size", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"optim.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.head_lr_factor > 0:
            raise ConfigError(f"optim.lr and optim.head_lr_factor must be > 0, got {self.lr}, {self.head_lr_factor}")


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
            if getattr(self, name) < 1:
                raise ConfigError(f"run.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """A training run: sections ``model``, ``data``, ``optim``, ``run`` of the YAML file."""

    data: DataConfig
    run: RunConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

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
        except (TypeError, ValueError):
            pass
        else:
            if hint is float or float(value) == number:
                return number
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


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML file.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not YAML, an unknown or missing key, or a bad value (the message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return config_from_dict(values, str(path))


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from nested dicts (the YAML structure); see :func:`load_config`."""
    return _from_dict(TrainConfig, values, where)


# ----------------------------------------------------------------------------------------------------------------
# Model, data, optimiser


def build_training_model(cfg: ModelConfig) -> DepthAnythingV2:
    """A metric :class:`DepthAnythingV2` initialised as ``cfg.init`` says.

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit the encoder.
    """
    model = DepthAnythingV2(cfg.encoder, "metric", cfg.max_depth)
    if cfg.init == "checkpoint":
        loaded, _ = build_model(cfg.checkpoint, encoder=cfg.encoder, max_depth=cfg.max_depth)
        model.load_state_dict(loaded.state_dict(), strict=True)
    elif cfg.init == "encoder":
        state, _ = load_checkpoint(cfg.checkpoint)
        encoder = {k.removeprefix("pretrained."): v for k, v in state.items() if k.startswith("pretrained.")}
        try:
            model.pretrained.load_state_dict(encoder, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{cfg.checkpoint}: encoder weights do not fit a {cfg.encoder} encoder: "
                                  f"{str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else exc}") from None
    return model


def open_dataset(cfg: DataConfig) -> RGBDSequence:
    """The configured RGB-D sequence."""
    return open_rgbd(cfg.path, cfg.format, depth_scale=cfg.depth_scale, intrinsics=cfg.intrinsics,
                     rgb_topic=cfg.rgb_topic, depth_topic=cfg.depth_topic, info_topic=cfg.info_topic,
                     max_dt=cfg.max_dt)


def build_optimizer(model: DepthAnythingV2, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: encoder (``lr``) and DPT head (``lr * head_lr_factor``)."""
    return torch.optim.AdamW(
        [{"params": list(model.pretrained.parameters()), "lr": cfg.lr},
         {"params": list(model.depth_head.parameters()), "lr": cfg.lr * cfg.head_lr_factor}],
        lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Linear warm-up, then polynomial decay to 0 (Depth Anything V2) or cosine decay (transformers schedules)."""
    from transformers import get_scheduler

    if cfg.schedule == "poly":
        return get_scheduler("polynomial", optimizer, num_warmup_steps=cfg.warmup_steps,
                             num_training_steps=total_steps,
                             scheduler_specific_kwargs={"power": cfg.poly_power, "lr_end": 0.0})
    return get_scheduler("cosine", optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], min_depth: float, max_depth: float,
                  channels_last: bool = False) -> torch.Tensor:
    """SiLog loss of one batch (``image`` (B,3,S,S), ``depth`` (B,S,S) metres NaN invalid) on its valid pixels."""
    image = batch["image"]
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    pred = model(image)
    depth = batch["depth"]
    return silog_loss(pred.float(), depth, valid_depth_mask(depth, min_depth, max_depth))


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint states


class Progress:
    """Where the run is; saved with ``accelerator.save_state`` (registered for checkpointing)."""

    def __init__(self):
        self.step = 0  # optimiser steps done
        self.epoch = 0  # current epoch
        self.batches_in_epoch = 0  # batches of ``epoch`` already consumed
        self.best_abs_rel = math.inf
        self.bad_in_a_row = 0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def state_dirs(output_dir: Path) -> list[Path]:
    """Complete saved states of a run, oldest first (``*.tmp`` folders of interrupted saves are not states)."""
    root = output_dir / STATES
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step_\d+", p.name))


def save_training_state(accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into ``states/step_N.tmp``, renamed to ``states/step_N`` once complete; older
    states beyond the newest ``keep`` are then removed. A kill at any moment leaves the previous state intact."""
    final = output_dir / STATES / f"step_{step:07d}"
    if final.exists():
        return final
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(tmp, final)
        for old in state_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------------------------
# Logging


CSV_FIELDS = ["step", "epoch", "time_s", "train_loss", "grad_norm", "lr_encoder", "lr_head", "skipped"] + [
    f"val_{m}" for m in METRIC_NAMES]


class CsvLog:
    """``log.csv``: one row per logged step or validation; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS).writerow(row)

    def read(self) -> list[dict]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training loss, learning rates and validation AbsRel / RMSE / delta1 against the step, saved as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*series("train_loss"), label="train SiLog")
    axes[0].plot(*series("val_silog"), "o-", label="val SiLog")
    axes[0].set_title("loss")
    axes[1].plot(*series("lr_encoder"), label="encoder")
    axes[1].plot(*series("lr_head"), label="head")
    axes[1].set_yscale("log")
    axes[1].set_title("learning rate")
    axes[2].plot(*series("val_abs_rel"), "o-", label="AbsRel")
    axes[2].plot(*series("val_rmse"), "o-", label="RMSE [m]")
    axes[2].plot(*series("val_delta1"), "o-", label="delta1")
    axes[2].set_title("validation")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Training


def validate(model: torch.nn.Module, metadata: CheckpointMetadata, source: RGBDSequence, indices: list[int],
             cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Mean validation metrics: the model predicts at network size through :class:`DepthEstimator` (as deployed),
    upsampled to each ground truth's resolution, no alignment."""
    estimator = DepthEstimator(model, metadata, device=str(device), input_size=cfg.data.input_size)
    try:
        per_frame = [m for _, _, m in evaluate_frames(
            lambda frame: estimator.infer(frame.rgb, fx=frame.camera.fx), (source[i] for i in indices),
            min_depth=cfg.data.min_depth, max_depth=cfg.max_depth, crop=cfg.data.eval_crop)]
    finally:
        model.train()
    return mean_metrics(per_frame)


def median_baseline_metrics(source: RGBDSequence, indices: list[int], cfg: TrainConfig) -> dict[str, float]:
    """Validation metrics of predicting each frame's median ground-truth depth everywhere."""
    def predict(frame):
        return median_baseline(frame.depth, cfg.data.min_depth, cfg.max_depth)

    return mean_metrics([m for _, _, m in evaluate_frames(
        predict, (source[i] for i in indices), min_depth=cfg.data.min_depth, max_depth=cfg.max_depth,
        crop=cfg.data.eval_crop)])


def _short(metrics: dict[str, float]) -> str:
    return f"AbsRel {metrics['abs_rel']:.4f}, RMSE {metrics['rmse']:.4f} m, delta1 {metrics['delta1']:.4f}"


def train(cfg: TrainConfig, resume: bool = False, stop_after_steps: int | None = None,
          show_progress: bool = False) -> dict:
    """Run (or resume) a training run; returns the summary also written to ``summary.json``.

    Args:
        cfg: the configuration.
        resume: continue from the newest saved state in ``run.output_dir`` (model, optimiser, scheduler, RNG, step
            and data position restored); without it the output folder must not hold saved states.
        stop_after_steps: save the state and return once this many optimiser steps are done (chunked runs).
        show_progress: tqdm progress bars (CLI).

    Raises:
        FileExistsError: saved states present but ``resume`` not set.
        FileNotFoundError: ``resume`` set but there is no saved state.
        NonFiniteLossError: ``run.max_bad_steps`` non-finite losses in a row.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    out = Path(cfg.run.output_dir)
    existing = state_dirs(out)
    if existing and not resume:
        raise FileExistsError(f"{out} already holds a run (saved states in {out / STATES}); pass --resume to "
                              "continue it or choose another run.output_dir")
    if resume and not existing:
        raise FileNotFoundError(f"--resume: no saved state in {out / STATES}")
    out.mkdir(parents=True, exist_ok=True)

    accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision,
                              gradient_accumulation_steps=cfg.optim.grad_accum_steps,
                              log_with="tensorboard", project_dir=str(out))
    set_seed(cfg.run.seed)
    source = open_dataset(cfg.data)
    train_indices, val_indices = cfg.data.split.indices(source.stamps)
    model = build_training_model(cfg.model)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    metadata = CheckpointMetadata(
        cfg.model.encoder, "metric", cfg.model.max_depth, cfg.data.input_size,
        network_focal(source.camera.fx, source.camera.width, source.camera.height, cfg.data.input_size))
    dataset = TrainingFrames(source, train_indices, TrainTransform(cfg.data.input_size, cfg.data.augmentation),
                             seed=cfg.run.seed)
    sampler = EpochShuffleSampler(len(dataset), seed=cfg.run.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=cfg.data.num_workers)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training frames are fewer than one batch of {cfg.optim.batch_size}")
    steps_per_epoch = math.ceil(len(loader) / cfg.optim.grad_accum_steps)
    total_steps = cfg.optim.epochs * steps_per_epoch
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)

    if resume:
        accelerator.load_state(str(existing[-1]))
        log.info("resumed from %s (step %d, epoch %d)", existing[-1], progress.step, progress.epoch)
    else:
        for stale in (out / STATES).glob("*.tmp") if (out / STATES).is_dir() else []:
            shutil.rmtree(stale)
        with (out / "config.yaml").open("w") as f:
            yaml.safe_dump(dataclasses.asdict(cfg), f, sort_keys=False)
    csv_log = CsvLog(out / "log.csv", progress.step if resume else None) if accelerator.is_main_process else None
    accelerator.init_trackers("tensorboard")
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if resume and summary_path.is_file() else {}
    summary.update(train_frames=len(train_indices), val_frames=len(val_indices), total_steps=total_steps,
                   checkpoint=str((out / BEST).resolve()))
    seconds_before = summary.get("train_seconds", 0.0)

    def write_summary():
        tmp = summary_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, summary_path)

    def run_validation():
        if not accelerator.is_main_process:
            return None
        metrics = validate(accelerator.unwrap_model(model), metadata, source, val_indices, cfg, accelerator.device)
        accelerator.log({f"val/{k}": v for k, v in metrics.items() if k in METRIC_NAMES}, step=progress.step)
        csv_log.write({"step": progress.step, "epoch": progress.epoch,
                       **{f"val_{k}": v for k, v in metrics.items() if k in METRIC_NAMES}})
        log.info("step %d validation: %s", progress.step, _short(metrics))
        summary["final"] = dict(metrics, step=progress.step)
        if metrics["abs_rel"] < progress.best_abs_rel:
            progress.best_abs_rel = metrics["abs_rel"]
            save_checkpoint(out / BEST, accelerator.unwrap_model(model), metadata)
            summary["best"] = dict(metrics, step=progress.step)
        write_summary()
        return metrics

    if accelerator.is_main_process and not resume:
        summary["baseline_gt_median"] = median_baseline_metrics(source, val_indices, cfg)
        log.info("baseline (each frame's GT median everywhere): %s", _short(summary["baseline_gt_median"]))
        write_summary()
        if cfg.run.validate_at_start:
            summary["before"] = dict(run_validation(), step=0)

    started = time.monotonic()
    stopped_early = False
    bar = tqdm(total=total_steps, initial=progress.step, desc="train", disable=not show_progress
               or not accelerator.is_local_main_process, dynamic_ncols=True)
    model.train()
    while progress.epoch < cfg.optim.epochs and not stopped_early:
        loader.set_epoch(progress.epoch)  # the prepared loader passes it on to our sampler (order) ...
        dataset.set_epoch(progress.epoch)  # ... and, with several processes, not always to the dataset (augmentation)
        batches = accelerator.skip_first_batches(loader, progress.batches_in_epoch) \
            if progress.batches_in_epoch else loader
        window_losses, window_bad = [], False
        for batch in batches:
            with accelerator.accumulate(model):
                loss = training_loss(model, batch, cfg.data.min_depth, cfg.max_depth, cfg.run.channels_last)
                finite = bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all())
                if finite:
                    accelerator.backward(loss)
                    window_losses.append(loss.item())
                    progress.bad_in_a_row = 0
                else:
                    window_bad = True
                    progress.bad_in_a_row += 1
                    frames = [source.names[i] for i in batch["frame"].tolist()]
                    log.warning("step %d: non-finite loss (%s) on the batch of frames %s; skipping the step",
                                progress.step, loss.item(), frames)
                    if progress.bad_in_a_row >= cfg.run.max_bad_steps:
                        raise NonFiniteLossError(
                            f"{progress.bad_in_a_row} non-finite losses in a row (last at step {progress.step}, "
                            f"frames {frames}): stopping; lower the learning rate or check the data. The last "
                            f"saved state is in {out / STATES}")
                if accelerator.sync_gradients:
                    grad_norm = None
                    if not window_bad and cfg.optim.clip_grad_norm is not None:
                        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm))
                    # fp16: the gradient scaler itself skips steps with inf/NaN gradients and lowers its scale
                    if grad_norm is not None and not math.isfinite(grad_norm) and cfg.run.mixed_precision != "fp16":
                        log.warning("step %d: non-finite gradient norm; skipping the step", progress.step)
                        window_bad = True
                    if not window_bad:  # a skipped step changes nothing, learning rate included
                        optimizer.step()
                        scheduler.step()
                    optimizer.zero_grad()
            progress.batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            lrs = scheduler.get_last_lr()
            if accelerator.is_main_process and (progress.step % cfg.run.log_every_steps == 0 or window_bad):
                row = {"step": progress.step, "epoch": progress.epoch, "time_s": round(time.monotonic() - started, 2),
                       "train_loss": float(np.mean(window_losses)) if window_losses else "",
                       "grad_norm": grad_norm if grad_norm is not None else "", "lr_encoder": lrs[0],
                       "lr_head": lrs[1], "skipped": int(window_bad)}
                csv_log.write(row)
                accelerator.log({k: v for k, v in row.items() if k in ("train_loss", "lr_encoder", "lr_head")
                                 and v != ""}, step=progress.step)
                bar.set_postfix(loss=row["train_loss"], epoch=progress.epoch)
            bar.update(1)
            window_losses, window_bad = [], False
            if stop_after_steps is not None and progress.step >= stop_after_steps:
                stopped_early = True
                break
        else:
            progress.epoch += 1
            progress.batches_in_epoch = 0
            if progress.epoch % cfg.run.val_every_epochs == 0 or progress.epoch == cfg.optim.epochs:
                run_validation()
            if progress.epoch % cfg.run.save_every_epochs == 0 or progress.epoch == cfg.optim.epochs:
                save_training_state(accelerator, out, progress.step, cfg.run.keep_states)
    bar.close()
    if stopped_early:
        save_training_state(accelerator, out, progress.step, cfg.run.keep_states)
    accelerator.end_training()
    if accelerator.is_main_process:
        summary.update(step=progress.step, finished=progress.epoch >= cfg.optim.epochs,
                       train_seconds=round(seconds_before + time.monotonic() - started, 1))
        write_summary()
        plot_curves(csv_log.read(), out / "curves.png")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training YAML (see config/train_7scenes.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest saved state")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="save the state and stop after this many optimiser steps (resume later)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config)
        summary = train(cfg, resume=args.resume, stop_after_steps=args.stop_after_steps, show_progress=True)
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError) as exc:
        print(f"train_supervised: error: {exc}", file=sys.stderr)
        return 2
    for key in ("baseline_gt_median", "before", "best", "final"):
        if key in summary:
            print(f"{key:>18}: {_short(summary[key])}")
    print(f"best checkpoint: {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
