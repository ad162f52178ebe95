"""Inference backends: the network call of :class:`~depth_ros.estimator.DepthEstimator` on ONNX Runtime, OpenVINO or
TensorRT instead of torch.

Only the network call moves: preprocessing, focal correction and upsampling stay in the estimator. A backend runs an
ONNX file of the network (:func:`export_onnx`), either one the user exported with ``depth_ros_export`` or one
exported from the torch model on first use into :func:`cache_dir` (one file per network input size: the Depth
Anything V2 position embedding is resampled per size and the exporter bakes it in). Each backend compiles the file
once per input shape (TensorRT engines are also cached on disk) and, before that shape is used, the estimator's
self-check compares it with torch fp32 on a fixed image (:func:`check_image`) within :data:`TOLERANCES`.

The ONNX file carries :class:`~depth_ros.checkpoints.CheckpointMetadata` (architecture, encoder, head, max depth,
input size, training focal) and the preprocessing (size rule, mean, std) in its ``metadata_props``, so it can be run
without depth_ros: input ``image`` (1, 3, h, w) float32 normalised RGB, output ``depth`` (1, h, w) float32.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

from depth_ros.checkpoints import METADATA_KEY, CheckpointError, CheckpointMetadata, metadata_from_dict
from depth_ros.files import atomic_write

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
# Self-check bound per precision: max over pixels of |backend - torch fp32| / |torch fp32| (see relative_difference)
# on the check image at network resolution. fp32 runtimes agree to ~1e-6 on this CPU; 1e-3 leaves room for other
# kernels (GPU convolutions, other CPUs). Reduced precision: ~0.4 % (bf16) / 0.05 % (fp16) per rounding, summed over
# the network's layers. A broken engine ("chaos" depth, scale drift) is off by far more than any of these.
TOLERANCES = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 1e-1}
INPUT_NAME, OUTPUT_NAME = "image", "depth"
PREPROCESSING_KEY = "depth_ros_preprocessing"
SHAPE_KEY = "depth_ros_input_shape"
OPSET = 18


class BackendError(ValueError):
    """A backend that cannot run here (runtime missing, unsupported device or precision, wrong ONNX file) or whose
    output disagrees with torch; the message names the backend and the remedy."""


def cache_dir() -> Path:
    """Folder of exported ONNX files and TensorRT engines: ``$DEPTH_ROS_CACHE``, else ``$XDG_CACHE_HOME/depth_ros``
    (default ``~/.cache/depth_ros``)."""
    if os.environ.get("DEPTH_ROS_CACHE"):
        return Path(os.environ["DEPTH_ROS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "depth_ros"


def require(module: str, package: str, purpose: str):
    """Import ``module`` or raise :class:`BackendError` with one line naming the pip package (``purpose``: what
    needs it)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{purpose} needs the Python package {module!r}: pip install {package}") from exc


def relative_difference(output: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Max over elements of ``|output - reference| / max(|reference|, floor)``, ``floor`` = 1 % of mean |reference|
    (so pixels where a relative model outputs ~0 do not divide by zero). Same shapes; returns inf on NaN."""
    output = torch.as_tensor(output).double().cpu()
    reference = torch.as_tensor(reference).double().cpu()
    floor = max(float(reference.abs().mean()) * 1e-2, 1e-12)
    value = float(((output - reference).abs() / reference.abs().clamp(min=floor)).max())
    return value if np.isfinite(value) else float("inf")


def check_image(height: int, width: int) -> np.ndarray:
    """The fixed self-check image: HxWx3 uint8 RGB, the same for a given size in every run.

    A floor-and-wall scene (vertical gradient, a bright box, stripes) plus seeded noise, so that every layer sees
    structure at several scales; rescaled from a 480x640 master so any size shows the same scene.
    """
    rows, cols = np.mgrid[0:480, 0:640].astype(np.float32)
    image = np.stack([rows / 480 * 200, cols / 640 * 180 + 40, 255 - rows / 480 * 160], axis=-1)
    image[200:360, 260:420] = (230, 200, 60)
    image[:, ::40] *= 0.5
    image += np.random.default_rng(0).normal(0, 12, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def weights_hash(model: torch.nn.Module, metadata: CheckpointMetadata) -> str:
    """16 hex digits identifying the weights and metadata of a network (names, shapes, values)."""
    digest = hashlib.sha256(json.dumps(asdict(metadata), sort_keys=True).encode())
    for name, value in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(model: torch.nn.Module, metadata: CheckpointMetadata, path: str | os.PathLike,
                shape: tuple[int, int] | None) -> Path:
    """Write the network as ONNX (opset 18, written atomically) with its metadata in ``metadata_props``.

    Args:
        model: a network of :data:`depth_ros.models.ARCHITECTURES` (in any mode, on any device; exported on CPU
            in fp32 eval mode, then restored).
        metadata: its :class:`CheckpointMetadata` (stored under ``_depth_ros_metadata``, JSON).
        path: the ``.onnx`` file to write.
        shape: network input ``(height, width)`` in px, multiples of the architecture's ``preprocessing.multiple``
            (see :meth:`~depth_ros.models.Preprocessing.network_size`); None: dynamic batch, height and width
            (PackNet only; batch stays 1).

    Returns:
        The path written. Input ``image``: (1, 3, h, w) float32 normalised RGB; output ``depth``: (1, h, w) float32.

    Raises:
        BackendError: onnx / onnxscript missing, dynamic size asked for Depth Anything V2, or a bad shape.
    """
    require("onnxscript", "onnx onnxscript", "ONNX export")
    onnx = require("onnx", "onnx onnxscript", "ONNX export")
    preprocessing = metadata.preprocessing
    if shape is None and metadata.architecture == "depth_anything_v2":
        raise BackendError("depth_anything_v2 cannot be exported with dynamic height/width: its position "
                           "embedding is resampled per input size; export at the camera's size instead")
    if shape is not None and (min(shape) <= 0 or any(side % preprocessing.multiple for side in shape)):
        raise BackendError(f"network input {shape} must be positive multiples of {preprocessing.multiple} px")
    path = Path(path)
    sample = torch.zeros(1, 3, *(shape or (2 * preprocessing.multiple, 3 * preprocessing.multiple)))
    dynamic = None if shape is not None else {"x": {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    was_training, device = model.training, next(model.parameters()).device
    model.to("cpu").float().eval()
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(model, (sample,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        opset_version=OPSET, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    finally:
        model.to(device).train(was_training)
    proto = program.model_proto
    props = {
        METADATA_KEY: json.dumps(asdict(metadata)),
        PREPROCESSING_KEY: json.dumps({  # the short side (input_size) is the metadata's
            "multiple": preprocessing.multiple, "mean": preprocessing.mean, "std": preprocessing.std,
            "rule": "RGB / 255, resized (bicubic) keeping the aspect ratio so the short side reaches input_size, "
                    "both sides rounded to multiples of `multiple`; (x - mean) / std per channel; output upsampled "
                    "bilinearly (align_corners) to the image; metric output in metres"}),
        SHAPE_KEY: "dynamic" if shape is None else f"{shape[0]}x{shape[1]}",
    }
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_write(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


@contextmanager
def _quiet_exporter():
    """Silence the exporter's per-pass INFO logs and deprecation warnings (its errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def read_onnx_metadata(path: str | os.PathLike) -> tuple[CheckpointMetadata, tuple[int, int] | None]:
    """The :class:`CheckpointMetadata` and network input ``(height, width)`` (None: dynamic) of an exported file.

    Raises:
        CheckpointError: the file is missing, not ONNX, or has no depth_ros metadata.
    """
    onnx = require("onnx", "onnx onnxscript", "reading ONNX files")
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read ONNX file ({type(exc).__name__})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise CheckpointError(f"{path}: no depth_ros metadata in the ONNX file (export it with depth_ros_export)")
    metadata = metadata_from_dict(json.loads(props[METADATA_KEY]), path)
    shape = props.get(SHAPE_KEY, "dynamic")
    return metadata, None if shape == "dynamic" else tuple(int(v) for v in shape.split("x"))


class OnnxFiles:
    """Where a backend gets its ONNX file for a network input shape: a given file, or exports of the torch model
    into ``cache_dir()/onnx``, keyed by :func:`weights_hash` and shape.

    Args:
        model, metadata: the torch network the file must match.
        path: a file written by :func:`export_onnx`; None: export on demand.

    Raises:
        CheckpointError: ``path`` unreadable. BackendError: its metadata differs from ``metadata``.
    """

    def __init__(self, model: torch.nn.Module, metadata: CheckpointMetadata, path: str | os.PathLike | None = None):
        self.model, self.metadata = model, metadata
        self.path = None if path is None else Path(path)
        if self.path is not None:
            stored, self.shape = read_onnx_metadata(self.path)
            if stored != metadata:
                differ = [k for k, v in asdict(stored).items() if asdict(metadata)[k] != v]
                raise BackendError(f"{self.path} was exported from another model ({', '.join(differ)} differ: "
                                   f"{asdict(stored)}); export it from this checkpoint with depth_ros_export")

    def __call__(self, shape: tuple[int, int]) -> Path:
        """ONNX file for network input ``(height, width)``; raises BackendError for a file of another size."""
        if self.path is not None:
            if self.shape is not None and self.shape != shape:
                raise BackendError(f"{self.path} takes a {self.shape[0]}x{self.shape[1]} network input but this "
                                   f"image needs {shape[0]}x{shape[1]}: export it at this camera's size")
            return self.path
        cached = cache_dir() / "onnx" / f"{weights_hash(self.model, self.metadata)}_{shape[0]}x{shape[1]}.onnx"
        if not cached.is_file():
            log.info("exporting the network to %s (once per model and input size)", cached)
            export_onnx(self.model, self.metadata, cached, shape)
        return cached


Runner = Callable[[torch.Tensor], torch.Tensor]


class Backend:
    """Common interface: ``backend(batch)`` maps (B, 3, h, w) float32 normalised input to (B, h, w) float32 network
    output on the batch's device, compiling (and verifying) each new input shape once.

    Args:
        onnx: ONNX file for a network input shape (e.g. :class:`OnnxFiles`).
        precision: ``fp32``, ``fp16`` or ``bf16``; each backend accepts those it lists in :attr:`PRECISIONS`.
        device: torch device of the estimator; each backend accepts the types in :attr:`DEVICES`.
        verify: called as ``verify(runner, shape)`` before a newly compiled shape is used; raises BackendError to
            refuse it (the estimator's self-check).

    Raises:
        BackendError: runtime missing (names the pip package), device or precision not supported.
    """

    NAME = ""
    PRECISIONS: tuple[str, ...] = ("fp32",)
    DEVICES: tuple[str, ...] = ("cpu",)
    PACKAGE = ""

    def __init__(self, onnx: Callable[[tuple[int, int]], Path], precision: str, device: torch.device,
                 verify: Callable[[Runner, tuple[int, int]], None] | None = None):
        if device.type not in self.DEVICES:
            raise BackendError(f"backend {self.NAME} runs on {' or '.join(self.DEVICES)}, not {device}")
        if precision not in self.PRECISIONS:
            raise BackendError(f"backend {self.NAME} supports precision {', '.join(self.PRECISIONS)} here, "
                               f"not {precision}")
        self.onnx, self.precision, self.device, self.verify = onnx, precision, device, verify
        self._runners: dict[tuple[int, int], Runner] = {}

    def prepare(self, shape: tuple[int, int]) -> Runner:
        """Compile for network input ``(height, width)`` (once) and verify; returns the single-image runner."""
        if shape not in self._runners:
            runner = self._compile(self.onnx(shape), shape)
            if self.verify is not None:
                self.verify(runner, shape)
            self._runners[shape] = runner
        return self._runners[shape]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        runner = self.prepare(tuple(batch.shape[-2:]))
        return torch.cat([runner(image) for image in batch.float().split(1)])

    def _compile(self, path: Path, shape: tuple[int, int]) -> Runner:
        raise NotImplementedError


def _threads() -> int:
    return torch.get_num_threads()  # follows OMP_NUM_THREADS / torch.set_num_threads, like the torch path


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPUExecutionProvider on ``cpu``, CUDAExecutionProvider on ``cuda[:N]`` (onnxruntime-gpu); fp32,
    with all graph optimisations and the torch thread count."""

    NAME, DEVICES, PACKAGE = "onnxruntime", ("cpu", "cuda"), "onnxruntime (onnxruntime-gpu for CUDA)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ort = require("onnxruntime", self.PACKAGE, "backend onnxruntime")
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in self.ort.get_available_providers():
            raise BackendError("backend onnxruntime on CUDA needs the CUDA build: pip install onnxruntime-gpu")

    def _compile(self, path: Path, shape: tuple[int, int]) -> Runner:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = (["CPUExecutionProvider"] if self.device.type == "cpu" else
                     [("CUDAExecutionProvider", {"device_id": self.device.index or 0})])
        try:
            session = self.ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise BackendError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from exc

        def run(image: torch.Tensor) -> torch.Tensor:
            out = session.run([OUTPUT_NAME], {INPUT_NAME: image.cpu().numpy()})[0]
            return torch.from_numpy(out).to(image.device)

        return run


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU: fp32 (``INFERENCE_PRECISION_HINT`` f32: OpenVINO would otherwise pick bf16 on AMX
    CPUs), bf16 / fp16 where the CPU reports the capability; latency hint, torch thread count, static shape;
    compiled models cached in ``cache_dir()/openvino``."""

    NAME, PRECISIONS, PACKAGE = "openvino", ("fp32", "bf16", "fp16"), "openvino"
    HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ov = require("openvino", self.PACKAGE, "backend openvino")
        self.core = self.ov.Core()
        self.core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})  # compiled models: fast restarts
        capabilities = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if self.precision != "fp32" and self.precision.upper() not in capabilities:
            raise BackendError(f"backend openvino: this CPU has no {self.precision} support "
                               f"(capabilities: {', '.join(capabilities)}); use fp32")

    def _compile(self, path: Path, shape: tuple[int, int]) -> Runner:
        try:
            model = self.core.read_model(str(path))
            model.reshape({model.inputs[0]: [1, 3, *shape]})
            compiled = self.core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": self.HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": _threads()})
        except Exception as exc:
            raise BackendError(f"openvino cannot load {path}: {str(exc).splitlines()[0]}") from exc
        request = compiled.create_infer_request()

        def run(image: torch.Tensor) -> torch.Tensor:
            request.infer({0: image.numpy()})
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return run


class TensorRTBackend(Backend):
    """TensorRT on a CUDA GPU, fp32 (TF32 off) or fp16. Engines are built from the ONNX file per input shape and
    cached in ``cache_dir()/engines``, keyed by the ONNX file's hash, input size, precision, TensorRT version and
    GPU name; input and output stay in torch CUDA memory."""

    NAME, PRECISIONS, DEVICES, PACKAGE = "tensorrt", ("fp32", "fp16"), ("cuda",), "tensorrt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trt = require("tensorrt", self.PACKAGE, "backend tensorrt")
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)

    def engine_path(self, path: Path, shape: tuple[int, int]) -> Path:
        """Cache file of the engine for an ONNX file, input shape, precision, TensorRT version and GPU."""
        onnx_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        gpu = re.sub(r"\W+", "-", torch.cuda.get_device_name(self.device)).strip("-")
        return (cache_dir() / "engines" /
                f"{onnx_hash}_{shape[0]}x{shape[1]}_{self.precision}_trt{self.trt.__version__}_{gpu}.engine")

    def _build(self, path: Path, shape: tuple[int, int]) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(path.read_bytes()):
            raise BackendError(f"tensorrt cannot parse {path}: {parser.get_error(0)}")
        config = builder.create_builder_config()
        config.clear_flag(trt.BuilderFlag.TF32)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, *[(1, 3, *shape)] * 3)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"tensorrt could not build an engine from {path} (see the TensorRT log above)")
        return bytes(serialized)

    def _compile(self, path: Path, shape: tuple[int, int]) -> Runner:
        engine_file = self.engine_path(path, shape)
        if not engine_file.is_file():
            log.info("building TensorRT %s engine %s (minutes, once per model, size and GPU)", self.precision,
                     engine_file)
            with atomic_write(engine_file) as tmp:
                tmp.write_bytes(self._build(path, shape))
        engine = self.trt.Runtime(self.logger).deserialize_cuda_engine(engine_file.read_bytes())
        if engine is None:
            raise BackendError(f"tensorrt cannot load the cached engine {engine_file}; delete it to rebuild")
        context = engine.create_execution_context()
        context.set_input_shape(INPUT_NAME, (1, 3, *shape))

        def run(image: torch.Tensor) -> torch.Tensor:
            image = image.to(self.device).contiguous()
            out = torch.empty((1, *shape), device=self.device)
            context.set_tensor_address(INPUT_NAME, image.data_ptr())
            context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not context.execute_async_v3(stream.cuda_stream):
                raise BackendError("tensorrt inference failed (see the TensorRT log)")
            stream.synchronize()
            return out

        return run


BACKEND_CLASSES: dict[str, type[Backend]] = {
    cls.NAME: cls for cls in (OnnxRuntimeBackend, OpenVinoBackend, TensorRTBackend)}


def create_backend(name: str, onnx: Callable[[tuple[int, int]], Path], precision: str, device: torch.device,
                   verify: Callable[[Runner, tuple[int, int]], None] | None = None) -> Backend:
    """The backend called ``name`` (a key of :data:`BACKEND_CLASSES`); arguments as :class:`Backend`.

    Raises:
        BackendError: unknown name, runtime missing, device or precision not supported.
    """
    if name not in BACKEND_CLASSES:
        raise BackendError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return BACKEND_CLASSES[name](onnx, precision, device, verify)
