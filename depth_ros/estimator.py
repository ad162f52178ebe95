"""DepthEstimator: RGB image in, metric depth in metres out, shared by the node, the bag tools and training.

Preprocessing follows the reference ``DepthAnythingV2.infer_image`` (github.com/DepthAnything/Depth-Anything-V2)
for every architecture, with the architecture's :class:`depth_ros.models.Preprocessing`: RGB scaled to [0, 1],
resized keeping the aspect ratio so the short side reaches ``input_size`` (both sides multiples of
``preprocessing.multiple``: 14 for Depth Anything V2, 32 for PackNet; bicubic), normalised with
``preprocessing.mean/std`` (ImageNet for Depth Anything V2, none for PackNet); the network output is upsampled
bilinearly (``align_corners=True``) back to the image size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from depth_ros.backends import (
    BACKENDS,
    TOLERANCES,
    BackendError,
    OnnxFiles,
    check_image,
    create_backend,
    relative_difference,
)
from depth_ros.checkpoints import (
    CheckpointMetadata,
    build_model,
    build_transformers_model,
    is_transformers_source,
)
from depth_ros.models import Preprocessing
from depth_ros.published_depth import depth_factor, network_fx, network_sigma

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resize_to_network(rgb: np.ndarray, input_size: int, preprocessing: Preprocessing) -> np.ndarray:
    """HxWx3 uint8 RGB -> hxwx3 float32 RGB in [0, 1] (bicubic may overshoot slightly) at the network size.

    ``(h, w) = preprocessing.network_size(H, W, input_size)``, resized with cv2 bicubic as the reference ``Resize``.
    The resize runs in float32 (the reference uses float64; values differ by < 3e-5 after normalisation, 3x faster).

    Raises:
        ValueError: an image smaller than ``preprocessing.multiple`` px or a bad ``input_size``.
    """
    height, width = preprocessing.network_size(rgb.shape[0], rgb.shape[1], input_size)
    return cv2.resize(rgb.astype(np.float32) * (1.0 / 255.0), (width, height), interpolation=cv2.INTER_CUBIC)


def select_device(device: str = "auto") -> torch.device:
    """``auto`` -> first CUDA GPU if there is one, else CPU; otherwise ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: an unknown device string or a CUDA device that is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return chosen


class DepthEstimator:
    """Monocular depth from RGB images with any network of :data:`depth_ros.models.ARCHITECTURES` (Depth Anything V2,
    PackNet) or a transformers model.

    Build it with :meth:`from_checkpoint`. :meth:`infer` maps an HxWx3 uint8 RGB image to an HxW float32 depth map
    in metres (metric models) or relative inverse depth (relative models) at the image's resolution.

    Focal-length correction (metric models): a metric network learns depth for the focal length of its training
    camera, so with another camera its depth is off by the ratio of the focal lengths. With ``fx`` given (pixels, at
    the image's resolution) and ``focal_correction`` on, the output is scaled by
    ``fx_at_network_input / train_focal_px`` (both at network input), and always by the checkpoint's learnt
    ``scale``: :func:`depth_ros.published_depth.depth_factor`, the one conversion. Relative models ignore ``fx``.

    Attributes:
        model: the torch module (``DepthAnythingV2``, ``PackNet`` or a transformers wrapper), eval mode, on ``device``.
        metadata: :class:`CheckpointMetadata` of the weights.
        preprocessing: the architecture's input size rule and normalisation (``metadata.preprocessing``).
        device: torch device the model runs on.
        input_size: short-side network input size in pixels (multiple of ``preprocessing.multiple``).
        precision: ``fp32``, ``fp16`` or ``bf16`` (torch: the latter two via autocast; other backends: their own).
        focal_correction: whether ``fx`` rescales metric output.
        backend: the :class:`depth_ros.backends.Backend` running the network, or None for torch (also after a
            fallback).

    Backends (:mod:`depth_ros.backends`): ``torch`` runs ``model`` itself; ``onnxruntime``, ``openvino`` and
    ``tensorrt`` run an ONNX export of it and replace only the network call. Self-check: before a backend runs an
    input shape for the first time (at construction: the shape of a 640x480 image), it runs the fixed
    :func:`~depth_ros.backends.check_image` at that shape and torch fp32 does too; when the depth differs by more
    than :data:`~depth_ros.backends.TOLERANCES` [precision] (max relative difference) it raises
    :class:`~depth_ros.backends.BackendError`, or with ``backend_fallback`` logs the error and goes on with torch.

    Uncertainty: with a checkpoint that has a sigma head (``metadata.uncertainty``), :meth:`infer_with_sigma` also
    returns sigma in metres, converted like depth (:func:`depth_ros.published_depth.network_sigma` times the same
    factor). Only the torch backend runs the sigma head: the ONNX export carries depth alone, so with another backend
    :attr:`has_uncertainty` is False (logged at construction, info level).
    """

    CHECK_IMAGE_SIZE = (480, 640)  # (H, W) whose network shape the self-check runs at construction

    def __init__(self, model: torch.nn.Module, metadata: CheckpointMetadata, device: str = "auto",
                 precision: str = "fp32", input_size: int | None = None, focal_correction: bool = True,
                 compile: bool = False, backend: str = "torch", backend_model: str | os.PathLike | None = None,
                 backend_fallback: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.preprocessing = metadata.preprocessing
        input_size = input_size or metadata.input_size
        self.preprocessing.network_size(input_size, input_size, input_size)  # validates input_size
        self.device = select_device(device)
        self.precision = precision
        self.input_size = input_size
        self.metadata = metadata
        self.focal_correction = focal_correction
        self.model = model.to(self.device).eval()
        self._forward_module = torch.compile(self.model) if compile else self.model
        self._mean = torch.tensor(self.preprocessing.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.preprocessing.std, device=self.device).view(1, 3, 1, 1)
        self.backend = None
        self.backend_fallback = backend_fallback
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if backend != "torch":
            self._start_backend(backend, backend_model)
            if metadata.uncertainty and self.backend is not None:  # depth_node warns if sigma is wanted
                log.info("backend %s runs the depth output only: the checkpoint's sigma head is not used (no "
                            "uncertainty; use backend torch for it)", backend)

    def _start_backend(self, name: str, onnx_path: str | os.PathLike | None) -> None:
        try:
            self.backend = create_backend(name, OnnxFiles(self.model, self.metadata, onnx_path), self.precision,
                                          self.device, self._self_check)
            self.backend.prepare(self.network_size(*self.CHECK_IMAGE_SIZE))
        except BackendError as error:
            self._fall_back(error)

    def _fall_back(self, error: BackendError) -> None:
        """Raise ``error``, or with ``backend_fallback`` log it and continue on torch."""
        if not self.backend_fallback:
            raise error
        self.backend = None
        log.error("%s; falling back to torch (backend_fallback)", error)

    @torch.inference_mode()
    def _self_check(self, runner, shape: tuple[int, int]) -> None:
        """BackendError when ``runner`` and torch fp32 disagree on the check image at network ``shape`` (h, w)."""
        batch = self._normalise(check_image(*shape).astype(np.float32) * (1.0 / 255.0))
        reference = self.model(batch).float()
        difference = relative_difference(runner(batch), reference)
        tolerance = TOLERANCES[self.precision]
        name = f"backend {self.backend.NAME} {self.precision}"
        if not difference <= tolerance:
            raise BackendError(f"{name} self-check failed: depth differs from torch fp32 by up to "
                               f"{difference:.3g} (relative) at {shape[0]}x{shape[1]}, tolerance {tolerance:g}; the "
                               "model file or runtime is broken")
        log.info("%s self-check passed at %dx%d: max relative difference to torch fp32 %.2g (tolerance %g)",
                 name, *shape, difference, tolerance)

    @classmethod
    def from_checkpoint(cls, path_or_id: str | os.PathLike, encoder: str | None = None,
                        max_depth: float | None = None, device: str = "auto", precision: str = "fp32",
                        input_size: int | None = None, focal_correction: bool = True,
                        compile: bool = False, backend: str = "torch", backend_model: str | os.PathLike | None = None,
                        backend_fallback: bool = False) -> DepthEstimator:
        """Build an estimator from a checkpoint file, an official model id, or a transformers folder / hub id.

        Args:
            path_or_id: ``.pth`` / ``.safetensors`` file, an id of :data:`depth_ros.checkpoints.OFFICIAL_MODELS`
                (downloaded with huggingface_hub on first use) or of :data:`~depth_ros.checkpoints.BUNDLED_MODELS`
                (shipped in the package), or a transformers model folder / hub id.
            encoder: override of the encoder stored in / inferred from the checkpoint.
            max_depth: override of the metric head's range in metres.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            precision: ``fp32``, ``fp16`` or ``bf16``.
            input_size: short-side network input in pixels, a multiple of the architecture's
                ``preprocessing.multiple`` (14 Depth Anything V2, 32 PackNet); None: the size the checkpoint was
                trained at (its metadata; 518 for the official models).
            focal_correction: rescale metric depth by the focal-length ratio when ``fx`` is given.
            compile: wrap the model in ``torch.compile`` (torch backend).
            backend: ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt`` (see :mod:`depth_ros.backends`).
            backend_model: ONNX file for a non-torch backend (``depth_ros_export`` of this checkpoint); None:
                exported into the cache on first use.
            backend_fallback: run torch instead of refusing when the backend cannot start or fails its self-check.

        Raises:
            CheckpointError: the checkpoint (or ``backend_model``) cannot be found, read or matched to the model.
            BackendError: the backend cannot run here or fails its self-check (without ``backend_fallback``).
            ValueError: bad device, precision, input size or backend name.
        """
        if is_transformers_source(path_or_id):
            model, metadata = build_transformers_model(path_or_id)
        else:
            model, metadata = build_model(path_or_id, encoder=encoder, max_depth=max_depth)
        return cls(model, metadata, device=device, precision=precision, input_size=input_size,
                   focal_correction=focal_correction, compile=compile, backend=backend, backend_model=backend_model,
                   backend_fallback=backend_fallback)

    @property
    def has_uncertainty(self) -> bool:
        """True when :meth:`infer_with_sigma` can give sigma: a sigma head, run by the torch backend."""
        return self.metadata.uncertainty and self.backend is None

    @property
    def is_metric(self) -> bool:
        """True when the output is metric depth in metres (else relative inverse depth)."""
        return self.metadata.head == "metric"

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(height, width)`` for an image of that size; see :func:`depth_ros.models.network_size`."""
        return self.preprocessing.network_size(height, width, self.input_size)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB -> (1,3,h,w) float32 normalised tensor on the device (see :func:`resize_to_network`).

        Raises:
            ValueError: not an HxWx3 uint8 array, or smaller than ``preprocessing.multiple`` px on a side.
        """
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            shape = getattr(rgb, "shape", None)
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {type(rgb).__name__} "
                             f"{getattr(rgb, 'dtype', '')} {shape}")
        return self._normalise(resize_to_network(rgb, self.input_size, self.preprocessing))

    def _normalise(self, resized: np.ndarray) -> torch.Tensor:
        """hxwx3 float32 RGB in [0, 1] -> (1,3,h,w) normalised tensor on the device."""
        tensor = torch.from_numpy(resized).to(self.device).permute(2, 0, 1).unsqueeze(0)
        return ((tensor - self._mean) / self._std).contiguous()

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, with_sigma: bool = False):
        """Raw network output: (B,3,h,w) normalised input -> (B,h,w) float32 (metres or relative).

        With ``with_sigma`` (needs :attr:`has_uncertainty`): the pair (that depth, (B,h,w) float32 sigma in the
        network's units, :func:`~depth_ros.published_depth.network_sigma`).

        Raises:
            BackendError: a new input shape fails the backend's self-check (without ``backend_fallback``).
            ValueError: ``with_sigma`` without :attr:`has_uncertainty`.
        """
        if with_sigma:
            if not self.has_uncertainty:
                raise ValueError("no uncertainty: the checkpoint has no sigma head"
                                 + ("" if not self.metadata.uncertainty else " run by this backend (use torch)"))
            with self._autocast():
                depth, log_sigma = self._forward_module(batch, with_sigma=True)
            return depth.float(), network_sigma(log_sigma.float())
        if self.backend is not None:
            try:
                return self.backend(batch)
            except BackendError as error:
                self._fall_back(error)
        with self._autocast():
            out = self._forward_module(batch)
        return out.float()

    @torch.inference_mode()
    def postprocess(self, raw: torch.Tensor, size: tuple[int, int], fx: float | None = None) -> np.ndarray:
        """(1,h,w) network output -> HxW float32 numpy at ``size = (H, W)``: published metric depth
        (:func:`depth_ros.published_depth.depth_factor`: learnt scale, focal ratio when ``fx`` is given).

        ``fx`` is in pixels at ``size``; the focal ratio uses the network input width ``w`` actually run.

        Raises:
            ValueError: ``fx`` given but not a finite positive number.
        """
        height, width = size
        fx_at_network = None if fx is None else network_fx(fx, width, raw.shape[-1])
        scale = depth_factor(self.metadata, fx_at_network, self.focal_correction)
        if scale != 1.0:
            raw = raw * scale  # linear, so scaling before the (linear) upsampling is the same and cheaper
        return F.interpolate(raw[:, None], (height, width), mode="bilinear", align_corners=True)[0, 0].cpu().numpy()

    def infer(self, rgb: np.ndarray, fx: float | None = None) -> np.ndarray:
        """Depth for one image.

        Args:
            rgb: HxWx3 uint8 RGB image (H, W >= ``preprocessing.multiple``).
            fx: horizontal focal length in pixels at this image's resolution, for focal correction (optional).

        Returns:
            HxW float32: metres along the optical axis (metric models) or relative inverse depth.

        Raises:
            ValueError: malformed image or focal length.
        """
        raw = self.forward(self.preprocess(rgb))
        return self.postprocess(raw, rgb.shape[:2], fx)

    def infer_with_sigma(self, rgb: np.ndarray, fx: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Depth and its uncertainty for one image (needs :attr:`has_uncertainty`).

        Args:
            rgb: HxWx3 uint8 RGB image.
            fx: horizontal focal length in pixels at this image's resolution, for focal correction (optional).

        Returns:
            (depth, sigma): HxW float32 metres each; sigma is the predicted standard deviation of the depth, scaled
            and upsampled exactly as the depth (:meth:`postprocess`).

        Raises:
            ValueError: malformed image or focal length, or no sigma head.
        """
        depth, sigma = self.forward(self.preprocess(rgb), with_sigma=True)
        return self.postprocess(depth, rgb.shape[:2], fx), self.postprocess(sigma, rgb.shape[:2], fx)

    def infer_batch(self, images: Sequence[np.ndarray],
                    fx: float | Sequence[float | None] | None = None) -> list[np.ndarray]:
        """Depth for several images; images of one size run as one batch, others one by one.

        Args:
            images: HxWx3 uint8 RGB images.
            fx: one focal length for all, one per image, or None.

        Returns:
            One HxW float32 depth map per image, in order.
        """
        fxs = list(fx) if isinstance(fx, Sequence) else [fx] * len(images)
        if len(fxs) != len(images):
            raise ValueError(f"got {len(fxs)} focal lengths for {len(images)} images")
        results: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            by_size.setdefault(tuple(np.shape(rgb)[:2]), []).append(i)
        for size, indices in by_size.items():
            raw = self.forward(torch.cat([self.preprocess(images[i]) for i in indices]))
            for row, i in enumerate(indices):
                results[i] = self.postprocess(raw[row:row + 1], size, fxs[i])
        return results
