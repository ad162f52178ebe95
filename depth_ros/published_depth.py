"""The one conversion from network output to the metric depth depth_ros publishes.

Every metric network here (Depth Anything V2's metric head, PackNet) outputs ``sigmoid(x) * max_depth`` metres: the
head's range is inside the network. What depth_node publishes for a camera is that output times two factors, each
recorded in the checkpoint's :class:`~depth_ros.checkpoints.CheckpointMetadata`:

    published depth = network output x scale x (fx at network input / train_focal_px)

- ``scale``: a learnt global depth factor (``trainable: scale``, the online adaptation), 1 for ordinary weights;
- the focal ratio (Depth Anything V2's metric fine-tuning and Metric3D's canonical camera): a metric network learns
  depth for the focal length of its training camera, so for another camera its depth is off by the ratio of the
  focal lengths, both measured at network input (the image resized to the network size). Without a focal length,
  with ``focal_correction`` off or without a recorded ``train_focal_px`` the ratio is 1.

The estimator (inference), the online adaptation (its loss and guard see what is published) and evaluation call
:func:`depth_factor`; there is no other place that scales depth. Relative models are not converted (factor 1).

Uncertainty: a model with a sigma head (``CheckpointMetadata.uncertainty``) outputs log sigma, the standard deviation
of its depth output in metres; the published sigma (``depth/uncertainty``) is :func:`network_sigma` of it times the
same :func:`depth_factor`, since scaling depth by a factor scales its standard deviation by that factor.
"""

from __future__ import annotations

import math

import torch

from depth_ros.checkpoints import CheckpointMetadata

# log sigma is clamped to [LOG_SIGMA_MIN, LOG_SIGMA_MAX] (1e-4 m .. 150 m) before exp: an untrained or diverging
# head cannot give 0, inf or overflow; NaN stays NaN (and the pixel is dropped downstream).
LOG_SIGMA_MIN, LOG_SIGMA_MAX = math.log(1e-4), 5.0


def network_fx(fx: float, width: int, network_width: int) -> float:
    """The focal length in pixels at network input of a camera with ``fx`` px at an image ``width`` px wide that is
    resized to ``network_width`` px.

    Raises:
        ValueError: ``fx`` is not a finite positive number of pixels.
    """
    try:
        fx = float(fx)
    except (TypeError, ValueError):
        fx = math.nan
    if not (math.isfinite(fx) and fx > 0):
        raise ValueError(f"focal length fx must be a finite positive number of pixels, got {fx}")
    return fx * network_width / width


def depth_factor(metadata: CheckpointMetadata, fx_at_network: float | None = None,
                 focal_correction: bool = True) -> float:
    """The factor from network output to published metric depth: ``scale x fx_at_network / train_focal_px``.

    Args:
        metadata: the checkpoint's metadata (``head``, ``scale``, ``train_focal_px``).
        fx_at_network: horizontal focal length in px at network input of this camera (:func:`network_fx`), or None
            (no focal correction).
        focal_correction: False: ignore the focal ratio (the learnt ``scale`` still applies).

    Returns:
        The factor (1.0 for relative models).
    """
    if metadata.head != "metric":
        return 1.0
    factor = metadata.scale
    if focal_correction and fx_at_network is not None and metadata.train_focal_px is not None:
        factor *= fx_at_network / metadata.train_focal_px
    return float(factor)


def network_sigma(log_sigma: torch.Tensor) -> torch.Tensor:
    """Sigma in the network's output units (metres before :func:`depth_factor`) from a sigma head's log sigma.

    Args:
        log_sigma: (...) float tensor, natural log of sigma in metres.

    Returns:
        ``exp(clamp(log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX))``, same shape, > 0 (NaN where the input is NaN).
    """
    return log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX).exp()
