"""The one training engine: Accelerate loop, schedule, atomic resumable states, logs, validation, best checkpoint.

Both trainers (``training/train_supervised.py``, ``training/train_self_supervised.py``) are this engine with an
objective from :mod:`depth_ros.learning.objectives`; the structure reads as Monodepth2's trainer does:
:func:`train` -> :meth:`TrainingRun.run_epoch` -> :meth:`TrainingRun.train_step` -> ``objective.loss``, with
:meth:`TrainingRun.validate` between epochs.

Outputs in ``run.output_dir``: ``states/step_NNNNNNN`` (``accelerator.save_state`` with the model as safetensors,
plus ``progress.json``; written to ``*.tmp`` and renamed, the newest ``keep_states`` kept; ``--resume`` continues
exactly from the newest and loads every file with ``weights_only=True``: no pickled object is ever executed),
``best.pth`` (best validation AbsRel, official layout + :class:`CheckpointMetadata`, loadable by ``DepthEstimator``,
``depth_node`` and either trainer), ``log.csv``, ``tensorboard/``, ``curves.png``, ``summary.json`` (baseline,
before, best, final validation metrics; the teacher of a distillation run), ``config.yaml`` (the configuration
used), ``teacher_depth/`` (distillation: the teacher's cached depth maps, :mod:`depth_ros.learning.distill`).

A non-finite loss or gradient is logged with its batch's frames and the step is skipped; ``run.max_bad_steps`` in a
row stop the run (:class:`NonFiniteLossError`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from depth_ros.checkpoints import CheckpointMetadata, network_focal, save_checkpoint
from depth_ros.data import RGBDSequence, open_rgbd
from depth_ros.data.augment import EpochShuffleSampler
from depth_ros.estimator import DepthEstimator
from depth_ros.files import apply_default_permissions, atomic_write
from depth_ros.learning.config import DataConfig, TrainConfig
from depth_ros.learning.objectives import build_objective
from depth_ros.learning.trainable import (
    build_optimizer,
    build_scheduler,
    build_training_model,
    cfg_metadata,
    deployable_metadata,
    deployable_state_dict,
    prepare_trainable,
)
from depth_ros.metrics import METRIC_NAMES, evaluate_frames, mean_metrics, median_baseline

log = logging.getLogger(__name__)

STATES = "states"
BEST = "best.pth"
PROGRESS = "progress.json"


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run stops (the last saved state stays usable)."""


class StateError(ValueError):
    """A saved training state that cannot be resumed (unreadable, tampered with, or of another run)."""


def open_dataset(cfg: DataConfig) -> RGBDSequence:
    """The configured RGB-D (or, with ``depth_topic`` null, RGB-only) sequence."""
    return open_rgbd(cfg.path, cfg.format, depth_scale=cfg.depth_scale, intrinsics=cfg.intrinsics,
                     rgb_topic=cfg.rgb_topic, depth_topic=cfg.depth_topic, info_topic=cfg.info_topic,
                     max_dt=cfg.max_dt)


# ----------------------------------------------------------------------------------------------------------------
# States


@dataclasses.dataclass
class Progress:
    """Where the run is; saved as ``progress.json`` in each state (plain JSON, never a pickle)."""

    step: int = 0  # optimiser steps done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of ``epoch`` already consumed
    best_abs_rel: float = math.inf
    bad_in_a_row: int = 0

    @classmethod
    def load(cls, state_dir: Path) -> Progress:
        """Read ``progress.json`` of a state folder.

        Raises:
            StateError: missing or malformed file.
        """
        path = state_dir / PROGRESS
        try:
            values = json.loads(path.read_text())
            return cls(**{f.name: type(f.default)(values[f.name]) for f in dataclasses.fields(cls)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{state_dir}: not a usable training state ({PROGRESS}: {type(exc).__name__}: "
                             f"{exc}); delete the folder to resume from an older state, or start a new run") from None


def state_dirs(output_dir: Path) -> list[Path]:
    """Complete saved states of a run, oldest first (``*.tmp`` folders of interrupted saves are not states)."""
    root = output_dir / STATES
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step_\d+", p.name))


def save_training_state(accelerator, output_dir: Path, progress: Progress, keep: int) -> Path:
    """``accelerator.save_state`` and ``progress.json`` into ``states/step_N.tmp``, renamed to ``states/step_N``
    once complete; older states beyond the newest ``keep`` are then removed. A kill at any moment leaves the
    previous state intact."""
    final = output_dir / STATES / f"step_{progress.step:07d}"
    if final.exists():
        return final
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / PROGRESS).write_text(json.dumps(dataclasses.asdict(progress)))
        apply_default_permissions(tmp)  # safetensors writes the model 0600; the states are shared like checkpoints
        os.replace(tmp, final)
        for old in state_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_training_state(accelerator, state_dir: Path) -> Progress:
    """Restore model, optimiser, scheduler and RNG states (``weights_only=True`` for every file) and the progress.

    Raises:
        StateError: a file is unreadable, holds objects other than tensors and plain data, or does not fit.
    """
    progress = Progress.load(state_dir)
    try:
        accelerator.load_state(str(state_dir), load_kwargs={"weights_only": True})
    except Exception as exc:  # unpickling refused, truncated file, shape mismatch: all end the same way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StateError(f"{state_dir}: not a usable training state ({type(exc).__name__}: {first[:200]}); delete "
                         "the folder to resume from an older state, or start a new run") from None
    return progress


# ----------------------------------------------------------------------------------------------------------------
# Logging


CSV_FIELDS = ["step", "epoch", "time_s", "train_loss", "grad_norm", "lr", "skipped", "photometric", "smoothness",
              "kept", "silog", "nll"] + [f"val_{m}" for m in METRIC_NAMES]


class CsvLog:
    """``log.csv``: one row per logged step or validation; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(row)

    def read(self) -> list[dict]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def plot_curves(rows: list[dict], path: Path, loss_name: str) -> None:
    """Training loss, learning rate and validation AbsRel / RMSE / delta1 against the step, saved as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*series("train_loss"), label=f"train {loss_name}")
    axes[0].plot(*series("val_silog"), "o-", label="val SiLog")
    axes[0].set_title("loss")
    axes[1].plot(*series("lr"), label="largest group lr")
    axes[1].set_yscale("log")
    axes[1].set_title("learning rate")
    axes[2].plot(*series("val_abs_rel"), "o-", label="AbsRel")
    axes[2].plot(*series("val_rmse"), "o-", label="RMSE [m]")
    axes[2].plot(*series("val_delta1"), "o-", label="delta1")
    axes[2].set_title("validation (no alignment)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def short_metrics(metrics: dict[str, float]) -> str:
    """``AbsRel ..., RMSE ... m, delta1 ...`` for logs."""
    return f"AbsRel {metrics['abs_rel']:.4f}, RMSE {metrics['rmse']:.4f} m, delta1 {metrics['delta1']:.4f}"


# ----------------------------------------------------------------------------------------------------------------
# Validation


def validate(model: torch.nn.Module, metadata: CheckpointMetadata, source: RGBDSequence, indices: list[int],
             cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Mean validation metrics: the model predicts at network size through :class:`DepthEstimator` (as deployed),
    upsampled to each ground truth's resolution, no alignment (metric scale counts)."""
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


# ----------------------------------------------------------------------------------------------------------------
# Training


class TrainingRun:
    """One run of the engine: built by :func:`train`, which documents the arguments."""

    def __init__(self, cfg: TrainConfig, objective: str, resume: bool, show_progress: bool):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg, self.out = cfg, Path(cfg.run.output_dir)
        existing = self._check_output(resume)
        self.accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision,
                                       gradient_accumulation_steps=cfg.optim.grad_accum_steps,
                                       log_with="tensorboard", project_dir=str(self.out))
        set_seed(cfg.run.seed)
        self.source = open_dataset(cfg.data)
        self.train_indices, self.val_indices = cfg.data.split.indices(self.source.stamps)
        self.objective = build_objective(objective, cfg, self.source, self.train_indices)
        self._prepare_training()
        self.progress = load_training_state(self.accelerator, existing[-1]) if resume else Progress()
        if resume:
            log.info("resumed from %s (step %d, epoch %d)", existing[-1], self.progress.step, self.progress.epoch)
        else:
            self._start_fresh()
        self._start_logs(objective, resume)
        self.labelled = self.source[self.val_indices[0]].depth is not None  # validation metrics possible
        if not self.labelled:
            log.warning("the validation frames have no depth: no metrics; best.pth holds the latest weights")
        self.show_progress = show_progress and self.accelerator.is_local_main_process
        self.started = time.monotonic()

    def _check_output(self, resume: bool) -> list[Path]:
        """The saved states of ``run.output_dir`` (created if missing); a run there needs ``resume``, a resume
        needs one."""
        existing = state_dirs(self.out)
        if existing and not resume:
            raise FileExistsError(f"{self.out} already holds a run (saved states in {self.out / STATES}); pass "
                                  "--resume to continue it or choose another run.output_dir")
        if resume and not existing:
            raise FileNotFoundError(f"--resume: no saved state in {self.out / STATES}")
        self.out.mkdir(parents=True, exist_ok=True)
        return existing

    def _prepare_training(self) -> None:
        """Model, trainable groups, metadata, data loader, optimiser and schedule, through Accelerate."""
        cfg = self.cfg
        model = build_training_model(cfg.model)
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model, groups = prepare_trainable(model, cfg.optim)
        camera = self.source.camera
        self.metadata = cfg_metadata(cfg.model, cfg.data.input_size, network_focal(
            camera.fx, camera.width, camera.height, cfg.data.input_size, cfg.preprocessing.multiple))
        dataset = self.objective.dataset
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.optim.batch_size, drop_last=True,
                                             sampler=EpochShuffleSampler(len(dataset), seed=cfg.run.seed),
                                             num_workers=cfg.data.num_workers)
        if len(loader) == 0:
            raise ValueError(f"{len(dataset)} training samples are fewer than one batch of {cfg.optim.batch_size}")
        self.total_steps = cfg.optim.epochs * math.ceil(len(loader) / cfg.optim.grad_accum_steps)
        optimizer = build_optimizer(groups, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim, self.total_steps)
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, loader, scheduler)

    def _start_fresh(self) -> None:
        """A new run: states a killed save left behind are removed, the configuration is written."""
        for stale in (self.out / STATES).glob("*.tmp") if (self.out / STATES).is_dir() else []:
            shutil.rmtree(stale)
        with (self.out / "config.yaml").open("w") as f:
            yaml.safe_dump(dataclasses.asdict(self.cfg), f, sort_keys=False)

    def _start_logs(self, objective: str, resume: bool) -> None:
        """log.csv (continued up to the resumed step), tensorboard and summary.json."""
        main = self.accelerator.is_main_process
        self.csv = CsvLog(self.out / "log.csv", self.progress.step if resume else None) if main else None
        self.accelerator.init_trackers("tensorboard")
        self.summary_path = self.out / "summary.json"
        self.summary = json.loads(self.summary_path.read_text()) if resume and self.summary_path.is_file() else {}
        self.summary.update(objective=objective, train_frames=len(self.train_indices),
                            train_samples=len(self.objective.dataset), val_frames=len(self.val_indices),
                            total_steps=self.total_steps, checkpoint=str((self.out / BEST).resolve()))
        if hasattr(self.objective, "selection"):
            self.summary["dropped_targets"] = dict(self.objective.selection.dropped)
        if getattr(self.objective, "teacher", None) is not None:
            self.summary["teacher"] = self.objective.teacher

    # -- outputs ---------------------------------------------------------------------------------------------

    def write_summary(self) -> None:
        with atomic_write(self.summary_path) as tmp:
            tmp.write_text(json.dumps(self.summary, indent=2))

    def save_state(self) -> None:
        save_training_state(self.accelerator, self.out, self.progress, self.cfg.run.keep_states)

    def validate(self) -> dict[str, float] | None:
        """Validation metrics of the current weights (main process); a new best (or equal) AbsRel writes ``best.pth``
        (without depth in the validation frames, every validation writes it)."""
        if not self.accelerator.is_main_process:
            return None
        model = self.accelerator.unwrap_model(self.model)
        if not self.labelled:
            save_checkpoint(self.out / BEST, deployable_state_dict(model), deployable_metadata(model, self.metadata))
            return None
        metrics = validate(model, self.metadata, self.source, self.val_indices, self.cfg, self.accelerator.device)
        step = self.progress.step
        self.accelerator.log({f"val/{k}": v for k, v in metrics.items() if k in METRIC_NAMES}, step=step)
        self.csv.write({"step": step, "epoch": self.progress.epoch,
                        **{f"val_{k}": v for k, v in metrics.items() if k in METRIC_NAMES}})
        log.info("step %d validation: %s", step, short_metrics(metrics))
        self.summary["final"] = dict(metrics, step=step)
        # a tie goes to the newer weights: with optim.trainable uncertainty the depth, hence AbsRel, never changes
        if metrics["abs_rel"] <= self.progress.best_abs_rel:
            self.progress.best_abs_rel = metrics["abs_rel"]
            save_checkpoint(self.out / BEST, deployable_state_dict(model), deployable_metadata(model, self.metadata))
            self.summary["best"] = dict(metrics, step=step)
        self.write_summary()
        return metrics

    # -- the loop ----------------------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor], window: dict) -> None:
        """Forward, loss and backward of one batch; an optimiser step when the accumulation window closes."""
        accelerator, progress = self.accelerator, self.progress
        with accelerator.accumulate(self.model):
            loss, stats = self.objective.loss(self.model, batch, self.cfg.run.channels_last)
            if bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()):
                accelerator.backward(loss)
                window["losses"].append(loss.item())
                window["stats"].append(stats)
                progress.bad_in_a_row = 0
            else:
                self._bad_batch(loss, batch)
                window["bad"] = True
            if accelerator.sync_gradients:
                window["grad_norm"] = None
                clip = self.cfg.optim.clip_grad_norm
                if not window["bad"] and clip is not None:
                    window["grad_norm"] = float(accelerator.clip_grad_norm_(self.model.parameters(), clip))
                # fp16: the gradient scaler itself skips steps with inf/NaN gradients and lowers its scale
                if window["grad_norm"] is not None and not math.isfinite(window["grad_norm"]) \
                        and self.cfg.run.mixed_precision != "fp16":
                    log.warning("step %d: non-finite gradient norm; skipping the step", progress.step)
                    window["bad"] = True
                if not window["bad"]:  # a skipped step changes nothing, learning rate included
                    self.optimizer.step()
                    self.scheduler.step()
                self.optimizer.zero_grad()

    def _bad_batch(self, loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        progress = self.progress
        progress.bad_in_a_row += 1
        frames = [self.source.names[i] for i in batch["frame"].tolist()]
        log.warning("step %d: non-finite loss (%s) on the batch of frames %s; skipping the step",
                    progress.step, loss.item(), frames)
        if progress.bad_in_a_row >= self.cfg.run.max_bad_steps:
            raise NonFiniteLossError(
                f"{progress.bad_in_a_row} non-finite losses in a row (last at step {progress.step}, frames "
                f"{frames}): stopping; lower the learning rate or check the data. The last saved state is in "
                f"{self.out / STATES}")

    def log_step(self, window: dict, bar) -> None:
        progress = self.progress
        if not self.accelerator.is_main_process or not (progress.step % self.cfg.run.log_every_steps == 0
                                                        or window["bad"]):
            return
        stats = {k: float(np.mean([s[k] for s in window["stats"] if k in s]))
                 for k in {k for s in window["stats"] for k in s}}
        row = {"step": progress.step, "epoch": progress.epoch, "time_s": round(time.monotonic() - self.started, 2),
               "train_loss": float(np.mean(window["losses"])) if window["losses"] else "",
               "grad_norm": window["grad_norm"] if window["grad_norm"] is not None else "",
               "lr": max(self.scheduler.get_last_lr()), "skipped": int(window["bad"]), **stats}
        self.csv.write(row)
        self.accelerator.log({k: v for k, v in row.items() if k in ("train_loss", "lr", *stats) and v != ""},
                             step=progress.step)
        bar.set_postfix(loss=row["train_loss"], epoch=progress.epoch)

    def run_epoch(self, bar, stop_after_steps: int | None) -> bool:
        """Train on the rest of the current epoch; True when ``stop_after_steps`` interrupted it."""
        progress = self.progress
        self.loader.set_epoch(progress.epoch)  # the prepared loader passes it on to our sampler (order) ...
        self.objective.dataset.set_epoch(progress.epoch)  # ... and not always to the dataset (augmentation)
        batches = self.accelerator.skip_first_batches(self.loader, progress.batches_in_epoch) \
            if progress.batches_in_epoch else self.loader
        window = {"losses": [], "stats": [], "bad": False, "grad_norm": None}
        for batch in batches:
            self.train_step(batch, window)
            progress.batches_in_epoch += 1
            if not self.accelerator.sync_gradients:
                continue
            progress.step += 1
            self.log_step(window, bar)
            bar.update(1)
            window = {"losses": [], "stats": [], "bad": False, "grad_norm": None}
            if stop_after_steps is not None and progress.step >= stop_after_steps:
                return True
        progress.epoch += 1
        progress.batches_in_epoch = 0
        epochs = self.cfg.optim.epochs
        if progress.epoch % self.cfg.run.val_every_epochs == 0 or progress.epoch == epochs:
            self.validate()
        if progress.epoch % self.cfg.run.save_every_epochs == 0 or progress.epoch == epochs:
            self.save_state()
        return False

    def run(self, resume: bool, stop_after_steps: int | None) -> dict:
        from tqdm.auto import tqdm

        seconds_before = self.summary.get("train_seconds", 0.0)
        if self.accelerator.is_main_process and not resume and self.labelled:
            self.summary["baseline_gt_median"] = median_baseline_metrics(self.source, self.val_indices, self.cfg)
            log.info("baseline (each frame's GT median everywhere): %s",
                     short_metrics(self.summary["baseline_gt_median"]))
            self.write_summary()
            if self.cfg.run.validate_at_start:
                self.summary["before"] = dict(self.validate(), step=0)
        bar = tqdm(total=self.total_steps, initial=self.progress.step, desc="train", disable=not self.show_progress,
                   dynamic_ncols=True)
        self.model.train()
        stopped_early = False
        while self.progress.epoch < self.cfg.optim.epochs and not stopped_early:
            stopped_early = self.run_epoch(bar, stop_after_steps)
        bar.close()
        if stopped_early:
            self.save_state()
        self.accelerator.end_training()
        if self.accelerator.is_main_process:
            self.summary.update(step=self.progress.step, finished=self.progress.epoch >= self.cfg.optim.epochs,
                                train_seconds=round(seconds_before + time.monotonic() - self.started, 1))
            self.write_summary()
            plot_curves(self.csv.read(), self.out / "curves.png", self.objective.name)
        return self.summary


def train(cfg: TrainConfig, objective: str = "silog", resume: bool = False, stop_after_steps: int | None = None,
          show_progress: bool = False) -> dict:
    """Run (or resume) a training run; returns the summary also written to ``summary.json``.

    Args:
        cfg: the configuration.
        objective: ``silog`` (metric depth labels) or ``photometric`` (posed images, no labels).
        resume: continue from the newest saved state in ``run.output_dir`` (model, optimiser, scheduler, RNG, step
            and data position restored); without it the output folder must not hold saved states.
        stop_after_steps: save the state and return once this many optimiser steps are done (chunked runs).
        show_progress: tqdm progress bars (CLI).

    Raises:
        FileExistsError: saved states present but ``resume`` not set.
        FileNotFoundError: ``resume`` set but there is no saved state.
        StateError: the newest saved state cannot be resumed.
        CheckpointError / ConfigError: the ``teacher`` (distillation) cannot be loaded or is not a metric model.
        NonFiniteLossError: ``run.max_bad_steps`` non-finite losses in a row.
        ValueError: unusable data (no sample, no depth for the supervised objective, ...).
    """
    return TrainingRun(cfg, objective, resume, show_progress).run(resume, stop_after_steps)
