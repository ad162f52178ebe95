#!/usr/bin/env python3
"""Evaluate a depth checkpoint on an RGB-D dataset (TUM-format folder, bag, NYU HDF5) with the standard metrics.

Usage::

    python training/evaluate.py --checkpoint FILE --data PATH [--frames A:B] [--align none|median|scale_shift]
                                [--input-size N] --out DIR

Each frame goes through :class:`DepthEstimator` exactly as deployed (network size, upsampled to the ground truth's
resolution, focal correction with the dataset's fx), then :func:`depth_ros.metrics.evaluate_depth`. Writes
``DIR/summary.json`` (means over frames of abs_rel, sq_rel, rmse, rmse_log, log10, delta1, delta2, delta3, silog,
and n_frames; ``skipped_frames``: names of frames without a valid ground-truth pixel, which are not scored),
``DIR/per_frame.csv`` and ``DIR/figure.png`` (image / ground truth / prediction / error panels). Errors end in one
``evaluate: error: ...`` line and exit status 1 (:func:`depth_ros.tools.cli.run_cli`).

A checkpoint with a sigma head (``--align none``) is also scored on its uncertainty
(:class:`depth_ros.sparsification.UncertaintyEvaluation`): ``summary.json`` gets ``uncertainty`` (AUSE / AURG for
AbsRel and RMSE against the random-order and sigma-proportional-to-depth baselines, the quantiles of sigma / depth,
and the sigma gating at each ``--max-relative-sigma``), ``DIR/sparsification.png`` the curves.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from depth_ros.data import open_rgbd, parse_frame_range
from depth_ros.estimator import DepthEstimator
from depth_ros.metrics import (
    ALIGN_MODES,
    CROPS,
    METRIC_NAMES,
    align_prediction,
    crop_mask,
    evaluate_frames,
    mean_metrics,
    valid_depth_mask,
)
from depth_ros.sparsification import SPARSIFICATION_METRICS, UncertaintyEvaluation, plot_sparsification
from depth_ros.tools.cli import run_cli

log = logging.getLogger("evaluate")

RELATIVE_MAX_DEPTH = 10.0  # depth cap for relative models (scale_shift alignment) unless --max-depth is given


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, official model id or transformers model")
    parser.add_argument("--data", required=True, help="TUM-format folder, bag (folder/.mcap/.db3/.bag) or .h5 data")
    parser.add_argument("--frames", default=None, help="frame range A:B (Python slice of the paired frames)")
    parser.add_argument("--align", choices=ALIGN_MODES, default="none",
                        help="none (metric), median scaling, or least-squares scale+shift in inverse depth")
    parser.add_argument("--input-size", type=int, default=None,
                        help="network short side (multiple of 14, 32 for PackNet); default: the checkpoint's "
                             "training size")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--min-depth", type=float, default=0.001, help="valid ground truth from (m)")
    parser.add_argument("--max-depth", type=float, default=None,
                        help=f"valid ground truth up to (m); default the model's range ({RELATIVE_MAX_DEPTH} m for "
                             "relative models)")
    parser.add_argument("--crop", choices=CROPS, default=None, help="evaluation crop")
    parser.add_argument("--depth-scale", type=float, default=None, help="TUM depth PNG units per metre")
    parser.add_argument("--intrinsics", type=float, nargs=4, default=None, metavar=("FX", "FY", "CX", "CY"),
                        help="intrinsics for TUM/HDF5 data without an intrinsics file")
    parser.add_argument("--rgb-topic", default="/camera/color/image_raw", help="bag colour topic")
    parser.add_argument("--depth-topic", default="/camera/depth/image_raw", help="bag depth topic")
    parser.add_argument("--info-topic", default=None, help="bag CameraInfo topic (default: beside --rgb-topic)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--no-focal-correction", action="store_true", help="ignore the dataset's focal length")
    parser.add_argument("--figure-frames", type=int, default=4, help="frames shown in figure.png")
    parser.add_argument("--max-relative-sigma", type=float, nargs="*", default=[], metavar="T",
                        help="checkpoints with a sigma head: measure sigma gating (keep sigma / depth <= T) at these "
                             "thresholds")
    return parser.parse_args(argv)


def load_estimator(args: argparse.Namespace) -> DepthEstimator:
    """The estimator at ``--input-size`` or, by default, at the checkpoint's own training input size."""
    return DepthEstimator.from_checkpoint(args.checkpoint, input_size=args.input_size, device=args.device,
                                          precision=args.precision, focal_correction=not args.no_focal_correction)


def save_figure(samples: list, path: Path, max_depth: float) -> None:
    """Rows of image / ground truth / prediction / absolute relative error for ``(frame, prediction)`` samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 4, figsize=(16, 3.2 * len(samples)), squeeze=False)
    for row, (frame, pred) in zip(axes, samples, strict=True):
        valid = valid_depth_mask(frame.depth, 0.0, max_depth)
        vmax = float(np.nanpercentile(frame.depth[valid], 98)) if valid.any() else max_depth
        error = np.where(valid, np.abs(pred - frame.depth) / np.where(valid, frame.depth, 1.0), np.nan)
        panels = [(frame.rgb, "image", {}), (frame.depth, "ground truth [m]", dict(cmap="turbo", vmin=0, vmax=vmax)),
                  (pred, "prediction [m]", dict(cmap="turbo", vmin=0, vmax=vmax)),
                  (error, "|pred - gt| / gt", dict(cmap="magma", vmin=0, vmax=0.5))]
        for ax, (image, title, style) in zip(row, panels, strict=True):
            shown = ax.imshow(image, **style)
            ax.set_title(f"{title}\n{frame.name}" if title == "image" else title, fontsize=8)
            ax.axis("off")
            if style:
                fig.colorbar(shown, ax=ax, fraction=0.035)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def depth_range(args: argparse.Namespace, model_max_depth: float) -> tuple[float, float]:
    """``(min_depth, max_depth)`` in m of the valid ground truth: ``--max-depth`` when given, else the model's range.

    Raises:
        ValueError: a bound that is not finite, ``--min-depth`` < 0, ``--max-depth`` <= 0, or min >= max.
    """
    max_depth = model_max_depth if args.max_depth is None else args.max_depth
    if not (math.isfinite(args.min_depth) and math.isfinite(max_depth)):
        raise ValueError(f"the depth range must be finite, got --min-depth {args.min_depth} and max {max_depth} m")
    if args.min_depth < 0:
        raise ValueError(f"--min-depth must be >= 0 m, got {args.min_depth}")
    if max_depth <= 0:
        raise ValueError(f"--max-depth must be > 0 m, got {max_depth}")
    if args.min_depth >= max_depth:
        raise ValueError(f"--min-depth ({args.min_depth} m) must be below the maximum depth ({max_depth} m, "
                         + ("--max-depth)" if args.max_depth is not None else "the model's range; set --max-depth)"))
    return args.min_depth, max_depth


def evaluate(args: argparse.Namespace, show_progress: bool = True) -> dict:
    """Run the evaluation described by the parsed arguments; returns the summary written to ``summary.json``.

    Raises:
        ValueError: bad data, checkpoint or depth range (see :func:`depth_range`), or no frame with a valid
            ground-truth pixel. FileNotFoundError: missing data.
    """
    from tqdm.auto import tqdm

    source = open_rgbd(args.data, depth_scale=args.depth_scale, intrinsics=args.intrinsics,
                       rgb_topic=args.rgb_topic, depth_topic=args.depth_topic, info_topic=args.info_topic)
    indices = list(parse_frame_range(args.frames, len(source)) if args.frames else range(len(source)))
    estimator = load_estimator(args)
    relative = not estimator.is_metric
    if relative and args.align != "scale_shift":
        raise ValueError(f"{args.checkpoint} is a relative model: evaluate it with --align scale_shift")
    min_depth, max_depth = depth_range(args, RELATIVE_MAX_DEPTH if relative else estimator.metadata.max_depth)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = set(np.linspace(0, len(indices) - 1, min(args.figure_frames, len(indices))).round().astype(int).tolist())
    rows, samples, skipped = [], [], []
    sigmas = {} if estimator.has_uncertainty and args.align == "none" else None
    uncertainty = UncertaintyEvaluation(args.max_relative_sigma) if sigmas is not None else None
    results = evaluate_frames(lambda frame: predict(estimator, frame, sigmas), (source[i] for i in indices),
                              min_depth=min_depth, max_depth=max_depth, crop=args.crop, align=args.align,
                              pred_is_disparity=relative, skip_empty=True)
    for position, (frame, pred, metrics) in enumerate(tqdm(results, total=len(indices), desc="evaluate",
                                                           disable=not show_progress)):
        if metrics is None:
            log.warning("skipping frame %d (%s): no valid ground-truth pixel in [%g, %g] m", indices[position],
                        frame.name, min_depth, max_depth)
            skipped.append(frame.name)
            continue
        rows.append({"frame": indices[position], "name": frame.name, **metrics})
        mask = valid_depth_mask(frame.depth, min_depth, max_depth)
        if uncertainty is not None:  # scored as the metrics are: in the crop, prediction capped to the range
            uncertainty.add(np.clip(pred, min_depth, max_depth), frame.depth, sigmas.pop(frame.name),
                            mask & crop_mask(*mask.shape, args.crop))
        if position in shown:  # the figure shows the prediction as scored (aligned, in metres)
            samples.append((frame, align_prediction(pred, frame.depth, mask, args.align, max_depth, relative)))
    if not rows:
        raise ValueError(f"none of the {len(indices)} frames has a valid ground-truth pixel in [{min_depth}, "
                         f"{max_depth}] m (check --min-depth / --max-depth and --depth-scale)")
    summary = {**mean_metrics([{k: r[k] for k in METRIC_NAMES} for r in rows]), "skipped_frames": skipped}
    if uncertainty is not None:
        summary["uncertainty"] = uncertainty.result()
        plot_sparsification(summary["uncertainty"], out / "sparsification.png",
                            f"{args.checkpoint}, {len(rows)} frames of {args.data}")
    write_outputs(out, summary, rows, samples, max_depth)
    return summary


def predict(estimator: DepthEstimator, frame, sigmas: dict | None) -> np.ndarray:
    """The frame's depth as deployed; with ``sigmas`` (a dict) its sigma is stored there under the frame's name."""
    if sigmas is None:
        return estimator.infer(frame.rgb, fx=frame.camera.fx)
    depth, sigmas[frame.name] = estimator.infer_with_sigma(frame.rgb, fx=frame.camera.fx)
    return depth


def write_outputs(out: Path, summary: dict, rows: list[dict], samples: list, max_depth: float) -> None:
    """summary.json, per_frame.csv and figure.png (when there are samples) in ``out``."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    with (out / "per_frame.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["frame", "name", *METRIC_NAMES])
        writer.writeheader()
        writer.writerows(rows)
    if samples:
        save_figure(samples, out / "figure.png", max_depth)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        summary = evaluate(args)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
                       if k not in ("skipped_frames", "uncertainty")))
        if "uncertainty" in summary:
            scores = summary["uncertainty"]
            print(" ".join(f"{m}: AUSE={scores[m]['ause']:.4f} AURG={scores[m]['aurg']:.4f} "
                           f"(random {scores[m]['ause_random']:.4f}, sigma~depth {scores[m]['ause_depth']:.4f})"
                           for m in SPARSIFICATION_METRICS))
        if summary["skipped_frames"]:
            print(f"skipped {len(summary['skipped_frames'])} frame(s) without valid ground truth: "
                  + ", ".join(summary["skipped_frames"]))

    return run_cli("evaluate", run)


if __name__ == "__main__":
    sys.exit(main())
