"""Checkpoints: official model ids, download, loading and atomic saving in the official layout.

One place for everything that turns a file, a short model id or a Hugging Face repository into weights:

* official Depth Anything V2 ``.pth`` files (Yang et al. 2024, github.com/DepthAnything/Depth-Anything-V2): plain
  state dicts with ``pretrained.*`` (DINOv2 encoder) and ``depth_head.*`` (DPT head) keys;
* checkpoints written by depth_ros training, of any architecture of :data:`depth_ros.models.ARCHITECTURES` (Depth
  Anything V2 in the official layout, PackNet): the state dict plus :class:`CheckpointMetadata`, as ``.safetensors``
  (metadata in the header) or ``.pth`` (metadata under the extra key ``_depth_ros_metadata``);
* short model ids (``da2-metric-indoor-small`` ...) fetched with huggingface_hub into its cache on first use;
* the model shipped inside the package, :data:`BUNDLED_MODELS` (``depth-ros-tiny-indoor``), which needs no network.

Files are always read with ``torch.load(weights_only=True)`` or safetensors: no pickled objects are executed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from depth_ros.files import atomic_write
from depth_ros.models import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    ENCODERS,
    MODEL_CONFIGS,
    Preprocessing,
    create_model,
    get_architecture,
    network_size,
)
from depth_ros.models.dinov2 import PATCH_SIZE

log = logging.getLogger(__name__)

METADATA_KEY = "_depth_ros_metadata"
OFFICIAL_INPUT_SIZE = ARCHITECTURES[DEFAULT_ARCHITECTURE].preprocessing.input_size  # 518 px


class CheckpointError(ValueError):
    """A checkpoint cannot be found, read or matched to the model; the message names the file and the problem."""


def network_focal(fx: float, width: int, height: int, input_size: int, multiple: int = PATCH_SIZE) -> float:
    """Horizontal focal length in pixels at network input for a camera with ``fx`` px at ``width`` x ``height``.

    ``input_size`` and ``multiple`` as in :func:`network_size` (the architecture's ``Preprocessing.multiple``).
    """
    return fx * network_size(height, width, input_size, multiple)[1] / width


@dataclass(frozen=True)
class CheckpointMetadata:
    """What is needed to rebuild and use a model from its weights file alone.

    Attributes:
        encoder: size variant of the architecture: the DINOv2 size (``vits``, ``vitb``, ``vitl``, ``vitg``) for
            Depth Anything V2, ``tiny`` or ``slim`` for PackNet.
        head: ``metric`` (sigmoid x max_depth, metres) or ``relative`` (ReLU, affine-invariant inverse depth;
            Depth Anything V2 only).
        max_depth: metric range of the sigmoid head in metres (ignored by relative models).
        input_size: short-side network input size in pixels used in training, a multiple of the architecture's
            ``preprocessing.multiple``; None: the architecture's default (518 for Depth Anything V2, 192 for
            PackNet).
        train_focal_px: horizontal focal length in pixels *at network input* of the training camera(s), or None
            when unknown (no focal correction is then possible).
        architecture: a key of :data:`depth_ros.models.ARCHITECTURES`; files written before this field existed
            are Depth Anything V2.
        scale: learnt global depth factor (``trainable: scale``, the online adaptation) applied to the network's
            output; files written before this field existed have 1. The head's range stays ``max_depth``; published
            depth is :func:`depth_ros.published_depth.depth_factor` times the network output.
        uncertainty: the network has a sigma head (``forward(x, with_sigma=True)``: log sigma of the depth in
            metres; published sigma is the same factor times exp(log sigma)); metric models only. Files written
            before this field existed have False, and their keys are unchanged.

    Raises:
        ValueError: unknown architecture, encoder or head, max_depth <= 0, a scale that is not finite and > 0, an
            input size that breaks the architecture's size rule, or uncertainty with a relative head.
    """

    encoder: str
    head: str
    max_depth: float
    input_size: int | None = None
    train_focal_px: float | None = None
    architecture: str = DEFAULT_ARCHITECTURE
    scale: float = 1.0
    uncertainty: bool = False

    def __post_init__(self):
        preprocessing = get_architecture(self.architecture, self.encoder, self.head).preprocessing
        if not self.max_depth > 0:
            raise ValueError(f"max_depth must be > 0 m, got {self.max_depth}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite factor > 0, got {self.scale}")
        if not isinstance(self.uncertainty, bool) or (self.uncertainty and self.head != "metric"):
            raise ValueError(f"uncertainty must be true or false, and true only for a metric head, got "
                             f"{self.uncertainty!r} for head {self.head!r}")
        if self.input_size is None:
            object.__setattr__(self, "input_size", preprocessing.input_size)
        preprocessing.network_size(self.input_size, self.input_size, self.input_size)  # validates the size

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size rule and normalisation of the architecture (from the registry, not stored in the file)."""
        return get_architecture(self.architecture).preprocessing


@dataclass(frozen=True)
class OfficialModel:
    """An official Depth Anything V2 checkpoint on the Hugging Face hub."""

    repo_id: str
    filename: str
    metadata: CheckpointMetadata
    licence: str


# Training cameras of the official metric models: Hypersim 886.81 px at 1024x768, Virtual KITTI 2 725.0087 px at
# 1242x375, both trained at 518 px (Depth-Anything-V2 metric_depth/README and dataset code).
HYPERSIM_FOCAL = network_focal(886.81, 1024, 768, OFFICIAL_INPUT_SIZE)
VKITTI_FOCAL = network_focal(725.0087, 1242, 375, OFFICIAL_INPUT_SIZE)
_SIZES = {"small": ("vits", "Small", "Apache-2.0"), "base": ("vitb", "Base", "CC-BY-NC-4.0"),
          "large": ("vitl", "Large", "CC-BY-NC-4.0")}


def _official_models() -> dict[str, OfficialModel]:
    models = {}
    for size, (encoder, name, licence) in _SIZES.items():
        models[f"da2-relative-{size}"] = OfficialModel(
            f"depth-anything/Depth-Anything-V2-{name}", f"depth_anything_v2_{encoder}.pth",
            CheckpointMetadata(encoder, "relative", 1.0), licence)
        for scene, dataset, max_depth, focal in (("indoor", "Hypersim", 20.0, HYPERSIM_FOCAL),
                                                 ("outdoor", "VKITTI", 80.0, VKITTI_FOCAL)):
            models[f"da2-metric-{scene}-{size}"] = OfficialModel(
                f"depth-anything/Depth-Anything-V2-Metric-{dataset}-{name}",
                f"depth_anything_v2_metric_{dataset.lower()}_{encoder}.pth",
                CheckpointMetadata(encoder, "metric", max_depth, OFFICIAL_INPUT_SIZE, focal), licence)
    return models


OFFICIAL_MODELS = _official_models()
_BY_FILENAME = {m.filename: m for m in OFFICIAL_MODELS.values()}

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED_MODEL = "depth-ros-tiny-indoor"
# Model id -> file installed with the package (wheel and colcon); its model card is the .md file beside it.
BUNDLED_MODELS = {BUNDLED_MODEL: WEIGHTS_DIR / f"{BUNDLED_MODEL}.safetensors"}
DEFAULT_MODEL = "da2-metric-indoor-small"  # the official model the tools use when none is given


def model_ids() -> list[str]:
    """Every short model id :func:`resolve` knows: the official ones, then the bundled ones."""
    return [*OFFICIAL_MODELS, *BUNDLED_MODELS]


def resolve(path_or_id: str | os.PathLike) -> tuple[Path, CheckpointMetadata | None]:
    """Local path of a checkpoint given as a file path, an official model id (downloaded when needed) or a bundled
    model id.

    Returns:
        The file path and the metadata known for it from the official table (None for other files: bundled files
        carry their own).

    Raises:
        CheckpointError: unknown id or path, a path that is not a regular file or is empty, an official file that
            is neither cached nor downloadable (the message says which file to fetch and where to put it), or a
            bundled file missing from this installation.
    """
    text = str(path_or_id)
    if text in OFFICIAL_MODELS:
        official = OFFICIAL_MODELS[text]
        return _download(text, official), official.metadata
    if text in BUNDLED_MODELS:
        if not BUNDLED_MODELS[text].is_file():
            raise CheckpointError(f"model {text!r}: {BUNDLED_MODELS[text]} is missing from this installation "
                                  "(reinstall depth_ros)")
        return BUNDLED_MODELS[text], None
    path = Path(text).expanduser()
    if not path.exists():
        known = ", ".join(model_ids())
        raise CheckpointError(f"{path}: no such checkpoint file (or give a model id: {known})")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a folder or a device), so not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty, not a checkpoint")
    official = _BY_FILENAME.get(path.name)
    return path, official.metadata if official else None


def _download(model_id: str, official: OfficialModel) -> Path:
    from huggingface_hub import hf_hub_download

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its per-retry warnings would bury the one-line error below
    try:
        return Path(hf_hub_download(official.repo_id, official.filename))
    except Exception as exc:  # offline, no network, hub error: all end in the same instruction
        url = f"https://huggingface.co/{official.repo_id}/resolve/main/{official.filename}"
        raise CheckpointError(
            f"model {model_id!r} is not in the Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}); fetch {url} on a connected machine and pass the file's path as the "
            f"checkpoint, or put it in the cache with `hf download {official.repo_id} {official.filename}`"
        ) from exc
    finally:
        hub_log.setLevel(level)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointMetadata | None]:
    """Read a state dict (``.pth`` or ``.safetensors``) and the depth_ros metadata it carries, if any.

    Accepts official files, depth_ros files and training checkpoints that wrap the weights under ``model`` or
    ``state_dict`` (DDP ``module.`` prefixes removed). Never unpickles objects (``weights_only=True``).

    Raises:
        CheckpointError: missing, truncated or unreadable file, or no tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    metadata = None
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                header = (f.metadata() or {}).get(METADATA_KEY)
            metadata = metadata_from_dict(json.loads(header), path) if header else None
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: the file is truncated or not a checkpoint "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if METADATA_KEY in state:
        metadata = metadata_from_dict(state.pop(METADATA_KEY), path)
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint")
    return state, metadata


def metadata_from_dict(values: dict, path: str | os.PathLike) -> CheckpointMetadata:
    """:class:`CheckpointMetadata` from the dict a file carries (JSON in a safetensors header or ONNX metadata,
    ``_depth_ros_metadata`` in a ``.pth``).

    Raises:
        CheckpointError: unknown or missing fields, or invalid values (names ``path``).
    """
    try:
        return CheckpointMetadata(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid depth_ros metadata: {exc}") from exc


def save_checkpoint(path: str | os.PathLike, weights: torch.nn.Module | dict[str, torch.Tensor],
                    metadata: CheckpointMetadata) -> Path:
    """Write weights in the official key layout plus ``metadata``, atomically.

    Written with :func:`depth_ros.files.atomic_write`: under a temporary name in the same folder, renamed over
    ``path`` only when complete (a crash or kill mid-write leaves any previous file at ``path`` intact), with the
    permissions a plain ``open`` would give it (0666 minus the umask), so a published model is readable by others.

    Args:
        path: ``*.safetensors`` (metadata in the header) or any other name (``torch.save``, metadata under
            ``_depth_ros_metadata``).
        weights: a network of :data:`depth_ros.models.ARCHITECTURES` (or a compiled/wrapped one) or its state dict.
        metadata: what :func:`build_model` needs to rebuild the model.

    Returns:
        The path written.
    """
    path = Path(path)
    module = getattr(weights, "_orig_mod", weights)  # torch.compile wrapper
    state = module.state_dict() if isinstance(module, torch.nn.Module) else dict(module)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_write(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={METADATA_KEY: json.dumps(asdict(metadata))})
        else:
            torch.save({**state, METADATA_KEY: asdict(metadata)}, tmp)
    return path


def _infer_metadata(path: Path, state: dict[str, torch.Tensor], max_depth: float | None) -> CheckpointMetadata:
    """Metadata for a file without any: encoder from the embedding width, head from the file name / max_depth."""
    cls_token = state.get("pretrained.cls_token")
    widths = {MODEL_CONFIGS[e].embed_dim: e for e in ENCODERS}
    if cls_token is None or cls_token.shape[-1] not in widths:
        raise CheckpointError(f"{path}: not a Depth Anything V2 checkpoint (no usable 'pretrained.cls_token')")
    encoder = widths[cls_token.shape[-1]]
    name = path.name.lower()
    if max_depth is None and "metric" in name:
        max_depth = 80.0 if re.search("vkitti|outdoor", name) else 20.0
    if max_depth is None:
        return CheckpointMetadata(encoder, "relative", 1.0)
    return CheckpointMetadata(encoder, "metric", max_depth)


def build_model(path_or_id: str | os.PathLike, encoder: str | None = None,
                max_depth: float | None = None) -> tuple[torch.nn.Module, CheckpointMetadata]:
    """Build the network a checkpoint describes (:func:`depth_ros.models.create_model`) and load it with
    ``strict=True``.

    Metadata comes, in this order, from the file itself, the official model table, or is inferred (encoder from the
    embedding width; metric when the file name says ``metric`` or ``max_depth`` is given, else relative).
    ``encoder`` and ``max_depth`` override it.

    Raises:
        CheckpointError: unreadable file, or weights that do not match the model (names the first mismatched keys).
    """
    path, official = resolve(path_or_id)
    state, metadata = load_checkpoint(path)
    metadata = metadata or official or _infer_metadata(path, state, max_depth)
    overrides = {k: v for k, v in (("encoder", encoder), ("max_depth", max_depth)) if v is not None}
    if overrides:
        metadata = CheckpointMetadata(**{**asdict(metadata), **overrides})
    model = create_model(metadata)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if items]
        raise CheckpointError(f"{path}: weights do not match a {metadata.architecture} {metadata.encoder} "
                              f"{metadata.head} model: "
                              + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    log.info("loaded %s (%s %s, %s head, max_depth %.1f m%s)", path, metadata.architecture, metadata.encoder,
             metadata.head, metadata.max_depth, ", sigma head" if metadata.uncertainty else "")
    return model, metadata


class TransformersDepthModel(torch.nn.Module):
    """A Hugging Face ``AutoModelForDepthEstimation`` behind the :class:`DepthAnythingV2` forward contract.

    ``forward(x)``: x (B,3,H,W) ImageNet-normalised RGB, H and W multiples of 14 -> (B,H,W) metres (metric models)
    or relative inverse depth. The wrapped model is ``.hf_model``.
    """

    def __init__(self, hf_model: torch.nn.Module):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf_model(pixel_values=x).predicted_depth


def is_transformers_source(path_or_id: str | os.PathLike) -> bool:
    """True for a local transformers model folder (has ``config.json``) or a hub id like ``owner/name``."""
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return (path / "config.json").is_file()
    return not path.exists() and text not in model_ids() and re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None


def build_transformers_model(path_or_id: str | os.PathLike) -> tuple[TransformersDepthModel, CheckpointMetadata]:
    """Load a transformers depth model (local folder or hub id, e.g. ``depth-anything/Depth-Anything-V2-Metric-
    Indoor-Small-hf``) and describe it with :class:`CheckpointMetadata`.

    The training focal length is known for the official metric models (``Indoor`` = Hypersim, ``Outdoor`` =
    Virtual KITTI 2, by name); for others it is None and no focal correction is applied.

    Raises:
        CheckpointError: transformers missing, or the model cannot be found, downloaded or loaded.
    """
    try:
        from transformers import AutoModelForDepthEstimation
    except ImportError as exc:
        raise CheckpointError(f"{path_or_id}: loading transformers models needs `pip install transformers`") from exc
    try:
        hf_model = AutoModelForDepthEstimation.from_pretrained(str(path_or_id))
    except Exception as exc:
        raise CheckpointError(f"{path_or_id}: cannot load transformers depth model "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    config = hf_model.config
    head = "metric" if getattr(config, "depth_estimation_type", "relative") == "metric" else "relative"
    width = getattr(getattr(config, "backbone_config", None), "hidden_size", None)
    encoder = {MODEL_CONFIGS[e].embed_dim: e for e in ENCODERS}.get(width, "vits")
    name = str(path_or_id).lower()
    focal = None
    if head == "metric":
        focal = HYPERSIM_FOCAL if re.search("indoor|hypersim", name) else (
            VKITTI_FOCAL if re.search("outdoor|vkitti", name) else None)
    max_depth = float(getattr(config, "max_depth", None) or 1.0)
    return TransformersDepthModel(hf_model), CheckpointMetadata(encoder, head, max_depth, OFFICIAL_INPUT_SIZE, focal)
