"""Training losses for metric depth.

The scale-invariant logarithmic loss (SiLog) is the one Depth Anything V2 uses to fine-tune its metric models
(Eigen et al., "Depth Map Prediction from a Single Image using a Multi-Scale Deep Network", NeurIPS 2014, eq. 4;
the ``lambda = 0.5`` variant of the official ``metric_depth/util/loss.py``).
"""

import torch

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
