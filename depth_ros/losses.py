"""Training losses for metric depth: supervised SiLog, the negative log-likelihood of a sigma head, and the
self-supervised photometric objective.

The scale-invariant logarithmic loss (SiLog) is the one Depth Anything V2 uses to fine-tune its metric models
(Eigen et al., "Depth Map Prediction from a Single Image using a Multi-Scale Deep Network", NeurIPS 2014, eq. 4;
the ``lambda = 0.5`` variant of the official ``metric_depth/util/loss.py``).
"""

import math

import torch
import torch.nn.functional as F

SILOG_LAMBDA = 0.5


def silog_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = SILOG_LAMBDA
) -> torch.Tensor:
    """Scale-invariant log loss ``sqrt(mean(d^2) - lam * mean(d)^2)`` with ``d = log(target) - log(pred)``.

    Args:
        pred: predicted depth in metres, any shape (typically (B, H, W)), strictly positive where ``valid``.
        target: ground-truth depth in metres, same shape as ``pred``.
        valid: bool tensor, same shape; the pixels that count (finite ground truth inside the depth range). The mean
            runs over all valid pixels of the whole batch, as in the reference implementation.
        lam: weight of the scale term; 0 gives the plain RMSE of log depth, 1 a fully scale-invariant error.

    Returns:
        A 0-dim float32 tensor. It is NaN when no pixel is valid and infinite when a valid prediction is zero; the
        caller decides what to do with a non-finite loss (the trainer skips that step).

    Raises:
        ValueError: if the shapes differ.
    """
    if pred.shape != target.shape or valid.shape != pred.shape:
        raise ValueError(
            f"silog_loss: shapes differ: pred {tuple(pred.shape)}, target {tuple(target.shape)}, "
            f"valid {tuple(valid.shape)}"
        )
    d = torch.log(target[valid].float()) - torch.log(pred[valid].float())
    return torch.sqrt((d**2).mean() - lam * d.mean() ** 2)


NLL_KINDS = ("gaussian", "laplacian")


def depth_nll_loss(pred: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                   kind: str = "gaussian") -> torch.Tensor:
    """Negative log-likelihood of the ground truth under the predicted per-pixel depth distribution, constants
    dropped (Kendall and Gal, "What Uncertainties Do We Need in Bayesian Deep Learning for Computer Vision?",
    NeurIPS 2017; Landgraf et al. 2025 fine-tune Depth Anything V2 with the Gaussian one).

    ``gaussian``: ``0.5 * (r / sigma)^2 + log sigma``; ``laplacian``: ``|r| / b + log b`` with the Laplace scale
    ``b = sigma / sqrt(2)``, ``r = target - pred``; in both, sigma is the standard deviation in metres (what
    ``depth/uncertainty`` publishes), the Laplace one being more robust to outliers. log sigma is clamped to
    :data:`depth_ros.published_depth.LOG_SIGMA_MIN` .. ``LOG_SIGMA_MAX`` as at inference.

    Args:
        pred: predicted depth in metres, any shape (e.g. (B, H, W)); pass it detached to train sigma alone.
        log_sigma: natural log of the predicted sigma in metres, same shape.
        target: ground-truth depth in metres, same shape.
        valid: bool, same shape: the pixels that count (mean over all of them in the batch).
        kind: one of :data:`NLL_KINDS`.

    Returns:
        0-dim float32 tensor (NaN when no pixel is valid).

    Raises:
        ValueError: shapes differ or an unknown ``kind``.
    """
    from depth_ros.published_depth import LOG_SIGMA_MAX, LOG_SIGMA_MIN

    if kind not in NLL_KINDS:
        raise ValueError(f"unknown NLL kind {kind!r}; expected one of {', '.join(NLL_KINDS)}")
    if not pred.shape == log_sigma.shape == target.shape == valid.shape:
        raise ValueError(f"depth_nll_loss: shapes differ: pred {tuple(pred.shape)}, log_sigma "
                         f"{tuple(log_sigma.shape)}, target {tuple(target.shape)}, valid {tuple(valid.shape)}")
    s = log_sigma[valid].float().clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    r = target[valid].float() - pred[valid].float()
    if kind == "gaussian":
        return (0.5 * r.square() * torch.exp(-2 * s) + s).mean()
    return (math.sqrt(2.0) * r.abs() * torch.exp(-s) + s).mean()


# ----------------------------------------------------------------------------------------------------------------
# Self-supervised photometric objective (Monodepth2: Godard et al., "Digging Into Self-Supervised Monocular Depth
# Estimation", ICCV 2019; PackNet-SfM: Guizilini et al., CVPR 2020), with metric camera poses in place of a pose
# network, so the depth it teaches is metric.

SSIM_C1 = 0.01**2  # SSIM stabilisers for images in [0, 1] (Wang et al. 2004, K1 = 0.01, K2 = 0.03)
SSIM_C2 = 0.03**2
PHOTOMETRIC_ALPHA = 0.85  # weight of the SSIM term against L1 (Monodepth2, PackNet-SfM)
SMOOTHNESS_WEIGHT = 1e-3


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1 - SSIM) / 2`` per pixel and channel, clamped to [0, 1], over 3x3 windows (mean filter, reflection
    padding), as Monodepth2's ``SSIM`` layer.

    Args:
        x: (B, C, H, W) float image in [0, 1] (H, W >= 2).
        y: (B, C, H, W) float image in [0, 1].

    Returns:
        (B, C, H, W) dissimilarity; 0 where the two windows are identical.
    """
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def photometric_error(target: torch.Tensor, reconstructed: torch.Tensor,
                      alpha: float = PHOTOMETRIC_ALPHA) -> torch.Tensor:
    """Per-pixel photometric reprojection error ``alpha * (1 - SSIM) / 2 + (1 - alpha) * |target - reconstructed|``,
    both terms averaged over the colour channels (Monodepth2 ``compute_reprojection_loss``).

    Args:
        target: (B, 3, H, W) float image in [0, 1].
        reconstructed: (B, 3, H, W) float image in [0, 1], e.g. a source warped into the target view.
        alpha: SSIM weight, 0.85 in Monodepth2 and PackNet-SfM.

    Returns:
        (B, 1, H, W) float32 error (0 for identical images).
    """
    target, reconstructed = target.float(), reconstructed.float()
    l1 = (target - reconstructed).abs().mean(1, keepdim=True)
    return alpha * ssim_dissimilarity(target, reconstructed).mean(1, keepdim=True) + (1 - alpha) * l1


def edge_aware_smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware first-order smoothness of mean-normalised inverse depth (Monodepth2 ``get_smooth_loss``).

    ``mean(|d_x n| exp(-mean_c |d_x I|)) + mean(|d_y n| exp(-mean_c |d_y I|))`` with ``n = (1/depth) / mean(1/depth)``
    per image, so the term does not favour shrinking the depth (Wang et al., CVPR 2018).

    Args:
        depth: (B, 1, H, W) positive depth in metres.
        image: (B, 3, H, W) the image at the same resolution (any value range, [0, 1] usually).

    Returns:
        0-dim float32 tensor.
    """
    inverse = 1.0 / depth.float()
    inverse = inverse / inverse.mean((2, 3), keepdim=True).clamp_min(1e-7)
    image = image.float()
    grad_x = (inverse[..., :, 1:] - inverse[..., :, :-1]).abs()
    grad_y = (inverse[..., 1:, :] - inverse[..., :-1, :]).abs()
    weight_x = torch.exp(-(image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True))
    weight_y = torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True))
    return (grad_x * weight_x).mean() + (grad_y * weight_y).mean()


def reprojection_loss(target: torch.Tensor, sources: torch.Tensor, depth: torch.Tensor, camera,
                      target_to_sources: torch.Tensor, automask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum photometric reprojection loss over source frames, with auto-masking (Monodepth2).

    Each source image is warped into the target view (:func:`~depth_ros.geometry.warp.view_synthesis`); per
    pixel, the smallest error over the sources counts (robust to occlusion). Pixels that project outside every
    source image are ignored, and with ``automask`` so are pixels where some *un-warped* source already matches
    the target at least as well as the best reconstruction (static camera, objects moving with it, texture-less
    regions).

    Args:
        target: (B, 3, H, W) target image in [0, 1].
        sources: (B, S, 3, H, W) source images in [0, 1].
        depth: (B, 1, H, W) target depth in metres (the prediction; gradients flow through it).
        camera: :class:`~depth_ros.geometry.camera.PinholeCamera` of all images at (H, W).
        target_to_sources: (B, S, 4, 4) ``T_source_target`` per source (target camera frame -> source camera frame).
        automask: apply the auto-mask.

    Returns:
        ``(loss, mask)``: 0-dim loss (mean over the kept pixels; NaN when none is kept, which the trainer treats as
        a bad step) and (B, 1, H, W) bool of the kept pixels.
    """
    from depth_ros.geometry.warp import view_synthesis

    errors, identity = [], []
    for s in range(sources.shape[1]):
        reconstructed, valid = view_synthesis(sources[:, s], depth, camera, target_to_sources[:, s])
        error = photometric_error(target, reconstructed)
        errors.append(torch.where(valid, error, torch.full_like(error, float("inf"))))
        if automask:
            identity.append(photometric_error(target, sources[:, s]))
    best = torch.cat(errors, 1).min(1, keepdim=True).values
    mask = torch.isfinite(best)
    if automask:
        mask &= best < torch.cat(identity, 1).min(1, keepdim=True).values
    return best[mask].mean(), mask


def self_supervised_loss(target: torch.Tensor, sources: torch.Tensor, depths: list[torch.Tensor], camera,
                         target_to_sources: torch.Tensor, automask: bool = True,
                         smoothness_weight: float = SMOOTHNESS_WEIGHT) -> tuple[torch.Tensor, dict[str, float]]:
    """Photometric view-synthesis objective over one or more depth scales (Monodepth2 ``compute_losses``).

    Every scale's depth is upsampled (bilinear) to the target resolution for the reprojection loss; its smoothness
    term is computed at its own resolution against the image resized to it, weighted ``smoothness_weight / 2**s``.
    The per-scale losses are averaged.

    Args:
        target: (B, 3, H, W) target image in [0, 1].
        sources: (B, S, 3, H, W) source images in [0, 1].
        depths: (B, 1, h_s, w_s) predicted target depths in metres, full resolution first (one entry for a
            single-scale network such as Depth Anything V2).
        camera: :class:`~depth_ros.geometry.camera.PinholeCamera` of the images at (H, W).
        target_to_sources: (B, S, 4, 4) ``T_source_target`` per source.
        automask: apply Monodepth2's auto-mask.
        smoothness_weight: weight of :func:`edge_aware_smoothness` at scale 0.

    Returns:
        ``(loss, stats)``: 0-dim loss; stats ``photometric``, ``smoothness`` and ``kept`` (share of pixels kept by
        the masks at scale 0) as floats for logging.
    """
    height, width = target.shape[-2:]
    total, stats = 0.0, {}
    for scale, depth in enumerate(depths):
        full = depth if depth.shape[-2:] == (height, width) else F.interpolate(
            depth, (height, width), mode="bilinear", align_corners=False)
        photometric, mask = reprojection_loss(target, sources, full, camera, target_to_sources, automask)
        image = target if depth.shape[-2:] == (height, width) else F.interpolate(
            target, depth.shape[-2:], mode="area")
        smoothness = edge_aware_smoothness(depth, image)
        total = total + photometric + smoothness_weight / 2**scale * smoothness
        if scale == 0:
            stats = {"photometric": float(photometric.detach()), "smoothness": float(smoothness.detach()),
                     "kept": float(mask.float().mean())}
    return total / len(depths), stats
