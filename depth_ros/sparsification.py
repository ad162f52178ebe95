"""How well a per-pixel uncertainty ranks the depth errors: sparsification curves, AUSE and AURG.

Definitions (Ilg et al., "Uncertainty Estimates and Multi-Hypotheses Networks for Optical Flow", ECCV 2018; for
monocular depth Poggi et al., "On the Uncertainty of Self-Supervised Monocular Depth Estimation", CVPR 2020): the
pixels of a frame are removed in order of decreasing uncertainty, a fraction ``k / steps`` at a time
(``k = 0 .. steps - 1``, 20 steps of 5 % as Poggi et al.), and the error metric (AbsRel, RMSE) of the pixels that
remain is the **sparsification curve**. Removing them in order of decreasing *true* error gives the **oracle** curve
(the best any uncertainty can do), in random order the **random** curve (an uncertainty that knows nothing: flat
in expectation). Curves are averaged over frames. With the removed fraction as x axis in [0, 1)::

    AUSE = area between the sparsification and the oracle curve     (0: the uncertainty orders errors perfectly)
    AURG = area between the random and the sparsification curve     (> 0: better than knowing nothing)

Besides random order, a second baseline is sigma proportional to depth (far pixels removed first): an uncertainty
head must beat it to add anything to "far is uncertain".
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SPARSIFICATION_METRICS = ("abs_rel", "rmse")
ORDERS = ("sigma", "oracle", "random", "depth")  # pixel orders: the uncertainty, true error, random, depth
STEPS = 20


def _curve(pixel_errors: np.ndarray, order_key: np.ndarray, metric: str, steps: int) -> np.ndarray:
    """Metric of the pixels left after removing the first ``k / steps`` of them by decreasing ``order_key``.

    ``pixel_errors``: per-pixel relative absolute error (abs_rel) or squared error (rmse), 1-D.
    """
    ascending = pixel_errors[np.argsort(order_key, kind="stable")]  # most certain first
    running = np.cumsum(ascending, dtype=np.float64)
    n = len(ascending)
    kept = np.maximum(1, np.ceil(n * (1 - np.arange(steps) / steps)).astype(int))
    means = running[kept - 1] / kept
    return np.sqrt(means) if metric == "rmse" else means


def frame_curves(pred: np.ndarray, gt: np.ndarray, sigma: np.ndarray, valid: np.ndarray,
                 rng: np.random.Generator, steps: int = STEPS) -> dict[str, dict[str, np.ndarray]]:
    """Sparsification curves of one frame for every metric of :data:`SPARSIFICATION_METRICS` and order of
    :data:`ORDERS`.

    Args:
        pred: (H, W) predicted depth in metres.
        gt: (H, W) ground-truth depth in metres.
        sigma: (H, W) predicted uncertainty (any monotonic measure; here sigma in metres); NaN counts as the most
            uncertain.
        valid: (H, W) bool, the pixels scored (finite ground truth in range, finite prediction).
        rng: random generator of the random order.
        steps: number of points of each curve (fractions removed ``0, 1/steps, ...``).

    Returns:
        ``{metric: {order: (steps,) float64 curve}}``.

    Raises:
        ValueError: shapes differ or no valid pixel.
    """
    if not pred.shape == gt.shape == sigma.shape == valid.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, sigma {sigma.shape}, valid {valid.shape}")
    if not valid.any():
        raise ValueError("no valid pixel")
    d, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    s = np.nan_to_num(sigma[valid].astype(np.float64), nan=np.inf)
    errors = {"abs_rel": np.abs(d - g) / g, "rmse": (d - g) ** 2}
    random_key = rng.permutation(len(d))
    curves = {}
    for metric, e in errors.items():
        keys = {"sigma": s, "oracle": e, "random": random_key, "depth": d}
        curves[metric] = {order: _curve(e, keys[order], metric, steps) for order in ORDERS}
    return curves


def summarize(per_frame: Iterable[dict[str, dict[str, np.ndarray]]]) -> dict:
    """Mean curves over frames and their areas.

    Args:
        per_frame: :func:`frame_curves` results.

    Returns:
        ``{metric: {"fractions": [...], "curves": {order: [...]}, "ause": AUSE of sigma, "aurg": AURG of sigma,
        "ause_random": AUSE of random order, "ause_depth": AUSE of sigma proportional to depth,
        "aurg_depth": AURG of sigma proportional to depth}}``, areas by the trapezoid rule over the removed
        fraction, plain floats and lists (JSON-ready).

    Raises:
        ValueError: no frame.
    """
    frames = list(per_frame)
    if not frames:
        raise ValueError("no frame to summarise")
    steps = len(frames[0][SPARSIFICATION_METRICS[0]]["sigma"])
    fractions = np.arange(steps) / steps
    summary = {}
    for metric in SPARSIFICATION_METRICS:
        mean = {order: np.mean([f[metric][order] for f in frames], axis=0) for order in ORDERS}

        def area(upper: str, lower: str, mean=mean) -> float:
            return float(np.trapezoid(mean[upper] - mean[lower], fractions))

        summary[metric] = {
            "fractions": fractions.tolist(), "curves": {k: v.tolist() for k, v in mean.items()},
            "ause": area("sigma", "oracle"), "aurg": area("random", "sigma"),
            "ause_random": area("random", "oracle"), "ause_depth": area("depth", "oracle"),
            "aurg_depth": area("random", "depth")}
    return summary


def plot_sparsification(summary: dict, path, title: str = "") -> None:
    """One panel per metric: the sparsification curve of sigma against the oracle, random and sigma-proportional-
    to-depth orders, with AUSE / AURG in the legend; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"sigma": "sigma (AUSE {ause:.4f}, AURG {aurg:.4f})", "oracle": "oracle (true error)",
              "random": "random order (AUSE {ause_random:.4f})",
              "depth": "sigma proportional to depth (AUSE {ause_depth:.4f})"}
    styles = {"sigma": "-", "oracle": "--", "random": ":", "depth": "-."}
    fig, axes = plt.subplots(1, len(SPARSIFICATION_METRICS), figsize=(11, 4), squeeze=False)
    for ax, metric in zip(axes[0], SPARSIFICATION_METRICS, strict=True):
        entry = summary[metric]
        for order in ORDERS:
            ax.plot(entry["fractions"], entry["curves"][order], styles[order], label=labels[order].format(**entry))
        ax.set_xlabel("fraction of pixels removed (most uncertain first)")
        ax.set_ylabel(f"{metric} of the remaining pixels" + (" (m)" if metric == "rmse" else ""))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def gating_metrics(pred: np.ndarray, gt: np.ndarray, sigma: np.ndarray, valid: np.ndarray,
                   max_relative_sigma: float) -> dict[str, float]:
    """What sigma gating (:func:`depth_ros.pipeline.sigma_gate`) keeps of one frame, and how good that is.

    Args:
        pred: (H, W) predicted depth in metres.
        gt: (H, W) ground-truth depth in metres.
        sigma: (H, W) predicted sigma in metres; NaN is never kept.
        valid: (H, W) bool, the pixels scored.
        max_relative_sigma: the gate, kept pixels have ``sigma <= max_relative_sigma * pred``.

    Returns:
        ``kept`` (fraction of valid pixels kept), ``abs_rel_all`` (AbsRel of all valid pixels) and ``abs_rel_kept``
        (of the kept ones; NaN when none is kept).

    Raises:
        ValueError: no valid pixel.
    """
    if not valid.any():
        raise ValueError("no valid pixel")
    d, g, s = pred[valid], gt[valid], sigma[valid]
    relative = np.abs(d - g) / g
    with np.errstate(invalid="ignore"):
        keep = s <= max_relative_sigma * d
    return {"kept": float(keep.mean()), "abs_rel_all": float(relative.mean()),
            "abs_rel_kept": float(relative[keep].mean()) if keep.any() else float("nan")}


QUANTILES = (0.5, 0.7, 0.8, 0.9)  # of sigma / depth, reported to choose max_relative_sigma
_QUANTILE_SAMPLES = 10_000  # pixels per frame sampled for the quantiles


class UncertaintyEvaluation:
    """Accumulates frames of (depth, sigma, ground truth) into sparsification curves, AUSE / AURG
    (:func:`summarize`), the quantiles of sigma / depth and the sigma gating at given thresholds
    (:func:`gating_metrics`, averaged over frames); ``training/evaluate.py`` uses it.

    Args:
        thresholds: values of ``max_relative_sigma`` to measure gating at.
        seed: seed of the random order and of the quantile samples.
    """

    def __init__(self, thresholds: Iterable[float] = (), seed: int = 0):
        self.thresholds = list(thresholds)
        self.rng = np.random.default_rng(seed)
        self.curves, self.samples = [], []
        self.gating: dict[float, list[dict[str, float]]] = {t: [] for t in self.thresholds}

    def add(self, pred: np.ndarray, gt: np.ndarray, sigma: np.ndarray, valid: np.ndarray) -> None:
        """One frame, arguments as :func:`frame_curves` (a frame without valid pixels is ignored)."""
        valid = valid & np.isfinite(pred)
        if not valid.any():
            return
        self.curves.append(frame_curves(pred, gt, sigma, valid, self.rng))
        relative = sigma[valid] / pred[valid]
        self.samples.append(self.rng.choice(relative, min(_QUANTILE_SAMPLES, len(relative)), replace=False))
        for t in self.thresholds:
            self.gating[t].append(gating_metrics(pred, gt, sigma, valid, t))

    def result(self) -> dict:
        """``{"abs_rel": ..., "rmse": ...}`` as :func:`summarize`, plus ``relative_sigma_quantiles`` (``"p50"`` ...)
        and ``gating`` (one entry per threshold: ``max_relative_sigma``, mean ``kept``, ``abs_rel_all``,
        ``abs_rel_kept`` over frames). Raises ValueError when no frame was added."""
        summary = summarize(self.curves)
        samples = np.concatenate(self.samples)
        summary["relative_sigma_quantiles"] = {f"p{round(q * 100)}": float(np.nanquantile(samples, q))
                                               for q in QUANTILES}
        summary["gating"] = [{"max_relative_sigma": t, **{k: _mean_of_finite([m[k] for m in rows])
                                                          for k in ("kept", "abs_rel_all", "abs_rel_kept")}}
                             for t, rows in self.gating.items()]
        return summary


def _mean_of_finite(values: list[float]) -> float:
    """Mean of the finite values (frames where the gate kept nothing have no AbsRel), NaN when there is none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
