"""Standard monocular depth metrics, evaluation crops and prediction alignment.

Metric definitions follow Eigen et al. (NeurIPS 2014) as computed by Monodepth2 (``compute_depth_errors``) and the
Depth Anything V2 metric evaluation: per image, over the valid ground-truth pixels,

- ``abs_rel`` = mean(|p - g| / g), ``sq_rel`` = mean((p - g)^2 / g), ``rmse`` = sqrt(mean((p - g)^2)) [m],
- ``rmse_log`` = sqrt(mean((ln p - ln g)^2)), ``log10`` = mean(|log10 p - log10 g|),
- ``delta<k>`` = fraction of pixels with max(p / g, g / p) < 1.25^k, k = 1, 2, 3,
- ``silog`` = sqrt(mean(d^2) - 0.5 mean(d)^2), d = ln g - ln p: the training loss (:func:`depth_ros.losses.silog_loss`),
  as Depth Anything V2 reports it (no factor 100, lambda 0.5).

Alignment modes: ``none`` (metric evaluation), ``median`` (scale by median(g) / median(p), the self-supervised
convention of Zhou et al. 2017) and ``scale_shift`` (least-squares scale and shift in inverse depth, as MiDaS
evaluates relative models, Ranftl et al. TPAMI 2020).
"""

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from depth_ros.losses import silog_loss

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "silog",
                "median_ratio")
ALIGN_MODES = ("none", "median", "scale_shift")
CROPS = ("eigen", "garg", "nyu")

# Crops as fractions of (top, bottom, left, right). KITTI: Garg et al. 2016 and Eigen et al. 2014 as used by
# Monodepth2 / BTS. NYU: Eigen's crop, rows 45:471 and columns 41:601 of the 480x640 images.
_CROP_FRACTIONS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "nyu": (45 / 480, 471 / 480, 41 / 640, 601 / 640),
}


def valid_depth_mask(gt, min_depth: float, max_depth: float):
    """Pixels whose ground truth is finite and inside ``[min_depth, max_depth]`` metres.

    Args:
        gt: depth in metres, a numpy array or a torch tensor of any shape; NaN / inf count as invalid.
        min_depth: lower bound in metres.
        max_depth: upper bound in metres.

    Returns:
        bool array or tensor (matching the input type), shape of ``gt``.
    """
    return (gt >= min_depth) & (gt <= max_depth)  # False for NaN and +-inf


def crop_mask(height: int, width: int, crop: str | None) -> np.ndarray:
    """Bool (height, width) mask of the evaluation crop ``"eigen"``, ``"garg"`` (KITTI) or ``"nyu"``; all True for None.

    The crop boxes are defined as fractions of the image, so they also apply to resized copies of the datasets.

    Raises:
        ValueError: for an unknown crop name.
    """
    mask = np.zeros((height, width), dtype=bool)
    if crop is None:
        mask[:] = True
        return mask
    if crop not in _CROP_FRACTIONS:
        raise ValueError(f"unknown evaluation crop {crop!r}; choose one of {', '.join(CROPS)}")
    top, bottom, left, right = _CROP_FRACTIONS[crop]
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The metrics of :data:`METRIC_NAMES` for matching 1-D arrays of valid predicted and true depths (metres).

    Args:
        pred: (N,) predicted depth, > 0.
        gt: (N,) ground-truth depth, > 0.

    Returns:
        dict name -> float (``rmse`` in metres, the others unitless). ``median_ratio`` is the median of
        prediction / ground truth: the metric scale error (1 is exact; 1.3 is 30 % too far).

    Raises:
        ValueError: if the arrays differ in shape or are empty.
    """
    if pred.shape != gt.shape or pred.ndim != 1:
        raise ValueError(f"depth_metrics: expected two 1-D arrays of equal length, got {pred.shape} and {gt.shape}")
    if pred.size == 0:
        raise ValueError("depth_metrics: no valid pixels")
    p = pred.astype(np.float64)
    g = gt.astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    diff = p - g
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "silog": float(silog_loss(torch.from_numpy(p), torch.from_numpy(g), torch.ones(p.shape, dtype=torch.bool))),
        "median_ratio": float(np.median(p / g)),
    }


def scale_shift_inverse(pred_disparity: np.ndarray, gt_depth: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimising sum((s * x + t - 1 / g)^2) over matching 1-D arrays (MiDaS alignment).

    Args:
        pred_disparity: (N,) predicted inverse depth ``x`` (1 / metres, or a relative model's raw output).
        gt_depth: (N,) ground-truth depth in metres, > 0.

    Raises:
        ValueError: if the fit is degenerate (fewer than two distinct predictions).
    """
    x = pred_disparity.astype(np.float64)
    y = 1.0 / gt_depth.astype(np.float64)
    a = np.stack([x, np.ones_like(x)], axis=1)
    (s, t), _, rank, _ = np.linalg.lstsq(a, y, rcond=None)
    if rank < 2:
        raise ValueError("scale_shift alignment is degenerate: the prediction is constant over the valid pixels")
    return float(s), float(t)


def align_prediction(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, mode: str, max_depth: float, pred_is_disparity: bool = False
) -> np.ndarray:
    """Align a prediction to the ground truth over ``mask`` and return depth in metres (same shape as ``pred``).

    Args:
        pred: (H, W) prediction: depth in metres, or inverse depth when ``pred_is_disparity`` (relative models).
        gt: (H, W) ground-truth depth in metres.
        mask: (H, W) bool, the pixels used for the fit.
        mode: ``"none"`` (returned as is), ``"median"`` (times median(gt) / median(pred)) or ``"scale_shift"``
            (least squares in inverse depth; the aligned inverse depth is capped below at ``1 / max_depth`` as in
            the MiDaS evaluation before it is inverted).
        max_depth: depth cap in metres for ``scale_shift``.
        pred_is_disparity: the prediction is inverse depth; only ``scale_shift`` accepts that.

    Raises:
        ValueError: unknown mode, a disparity prediction with a mode other than ``scale_shift``, or an empty mask.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment {mode!r}; choose one of {', '.join(ALIGN_MODES)}")
    if pred_is_disparity and mode != "scale_shift":
        raise ValueError(f"a relative (inverse-depth) prediction needs --align scale_shift, not {mode!r}")
    if not mask.any():
        raise ValueError("cannot align: no valid ground-truth pixel")
    if mode == "none":
        return pred
    if mode == "median":
        return pred * (np.median(gt[mask]) / np.median(pred[mask]))
    with np.errstate(divide="ignore"):  # pixels outside the mask may be 0
        disparity = pred if pred_is_disparity else 1.0 / pred
    s, t = scale_shift_inverse(disparity[mask], gt[mask])
    return 1.0 / np.maximum(s * disparity + t, 1.0 / max_depth)


class EmptyGroundTruth(ValueError):
    """No ground-truth pixel of a frame is valid (in range, inside the crop): the frame cannot be scored."""


def reference_at(reference: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A reference depth map brought to ``shape`` by one integer factor (nearest neighbour), never stretched.

    A registered depth camera often runs at an integer fraction or multiple of the colour resolution; any other
    size difference (another aspect ratio, a crop) means the pixels do not correspond, and scoring them would be
    silently wrong.

    Args:
        reference: (h, w) depth in m, NaN where invalid.
        shape: (H, W) of the prediction.

    Returns:
        (H, W) view or copy of ``reference`` (the same array when the shapes already agree).

    Raises:
        ValueError: the shapes are not related by one integer factor on both axes.
    """
    (height, width), (target_height, target_width) = reference.shape, shape
    if (height, width) == (target_height, target_width):
        return reference
    if target_height % height == 0 and target_width % width == 0 and target_height // height == target_width // width:
        factor = target_height // height
        return np.repeat(np.repeat(reference, factor, axis=0), factor, axis=1)
    if height % target_height == 0 and width % target_width == 0 and height // target_height == width // target_width:
        factor = height // target_height
        return reference[::factor, ::factor]
    raise ValueError(f"reference depth of {width}x{height} px is not an integer scaling of the {target_width}x"
                     f"{target_height} px depth (another aspect ratio or a crop): not scored")


def evaluate_depth(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    min_depth: float,
    max_depth: float,
    crop: str | None = None,
    align: str = "none",
    pred_is_disparity: bool = False,
) -> dict[str, float]:
    """Metrics of one frame: valid mask (finite gt in range, inside the crop), alignment, cap, :func:`depth_metrics`.

    The (aligned) prediction is clipped to ``[min_depth, max_depth]`` before the metrics (Monodepth2 convention).

    Args:
        pred: (H, W) prediction at the ground truth's resolution (see :func:`align_prediction` for its meaning).
        gt: (H, W) ground-truth depth in metres, NaN / 0 / out of range where invalid.
        min_depth: lower cap and validity bound in metres.
        max_depth: upper cap and validity bound in metres.
        crop: evaluation crop name or None (see :func:`crop_mask`).
        align: alignment mode (see :func:`align_prediction`).
        pred_is_disparity: the prediction is inverse depth (relative models).

    Raises:
        ValueError: shapes differ. EmptyGroundTruth: no ground-truth pixel is valid.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    mask = valid_depth_mask(gt, min_depth, max_depth) & crop_mask(*gt.shape, crop)
    if not mask.any():
        raise EmptyGroundTruth(f"no valid ground-truth pixel in this frame (depth in [{min_depth}, {max_depth}] m"
                               + (f", {crop} crop)" if crop else ")"))
    aligned = align_prediction(pred, gt, mask, align, max_depth, pred_is_disparity)
    return depth_metrics(np.clip(aligned[mask], min_depth, max_depth), gt[mask])


def mean_metrics(per_frame: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric of :data:`METRIC_NAMES` over frames, plus ``n_frames``.

    Raises:
        ValueError: for an empty sequence.
    """
    if not per_frame:
        raise ValueError("no frames were evaluated")
    summary = {name: float(np.mean([m[name] for m in per_frame])) for name in METRIC_NAMES}
    summary["n_frames"] = len(per_frame)
    return summary


def median_baseline(gt: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """The trivial predictor: each frame's median valid ground-truth depth everywhere; (H, W) float32 metres."""
    return np.full(gt.shape, np.median(gt[valid_depth_mask(gt, min_depth, max_depth)]), dtype=np.float32)



def evaluate_frames(predict: Callable[[object], np.ndarray], frames: Iterable, *, min_depth: float, max_depth: float,
                    crop: str | None = None, align: str = "none", pred_is_disparity: bool = False,
                    skip_empty: bool = False) -> Iterator[tuple[object, np.ndarray, dict[str, float] | None]]:
    """Predict and score frames one by one (validation in training and ``training/evaluate.py`` share it).

    Args:
        predict: frame -> (H, W) prediction at the frame's depth resolution (e.g. ``DepthEstimator.infer`` of
            ``frame.rgb`` with ``fx=frame.camera.fx``).
        frames: :class:`depth_ros.frame.Frame` objects (``.depth`` the ground truth).
        min_depth: see :func:`evaluate_depth`.
        max_depth: see :func:`evaluate_depth`.
        crop: see :func:`evaluate_depth`.
        align: see :func:`evaluate_depth`.
        pred_is_disparity: see :func:`evaluate_depth`.
        skip_empty: a frame without a valid ground-truth pixel yields ``metrics`` None instead of raising
            :class:`EmptyGroundTruth`.

    Yields:
        ``(frame, prediction, metrics)`` per frame.
    """
    for frame in frames:
        pred = predict(frame)
        try:
            metrics = evaluate_depth(pred, frame.depth, min_depth=min_depth, max_depth=max_depth, crop=crop,
                                     align=align, pred_is_disparity=pred_is_disparity)
        except EmptyGroundTruth:
            if not skip_empty:
                raise
            metrics = None
        yield frame, pred, metrics
