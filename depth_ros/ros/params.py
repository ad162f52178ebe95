"""Parameters of ``depth_node``: declared, validated and converted once into a typed :class:`NodeConfig`.

Every parameter is a field of :class:`NodeConfig`; its default and its documentation (with units) live there and
nowhere else in the code (``config/depth.yaml`` repeats them for users, and a test keeps the two in step).
:meth:`NodeConfig.from_values` works on a plain mapping (no rclpy), :func:`declare_and_load` declares the fields on
a node and reads them. Parameters are read-only after start-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from depth_ros.backends import BACKENDS
from depth_ros.checkpoints import DEFAULT_MODEL
from depth_ros.data.images import MAX_IMAGE_PIXELS
from depth_ros.errors import ConfigError
from depth_ros.estimator import PRECISIONS
from depth_ros.models import ENCODERS
from depth_ros.ros.conversions import DEPTH_TRANSPORTS

# Pose of the camera optical frame (REP 103: z forward, x right, y down) in the grid frame as x, y, z (m) and roll,
# pitch, yaw (rad, fixed axes x-y-z as tf2's static_transform_publisher): 0.5 m above the origin looking along +x.
DEFAULT_CAMERA_TO_BASE = (0.0, 0.0, 0.5, -math.pi / 2, 0.0, -math.pi / 2)
# Bounds of sizes derived from parameters: a typo must stop the node at start-up, not exhaust memory or a core later.
MAX_GRID_CELLS = 4_000_000  # e.g. 100 m x 100 m at 5 cm; the grid and its ray casting are per frame
MIN_DIAGNOSTICS_PERIOD = 0.1  # s, at most 10 status messages per second
MIN_IMAGE_PIXELS = 14 * 14  # one network patch


def _param(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


class ParameterTable:
    """Base of a node's typed parameters: a frozen dataclass whose fields (made with ``_param``) carry default and
    documentation; subclasses set :attr:`NODE_NAME` and :attr:`RUNTIME` and implement ``_validate``."""

    NODE_NAME = ""
    PARAMS_FILE = ""  # the documented parameters file in config/
    RUNTIME: tuple[str, ...] = ()  # parameters that may change while the node runs

    @classmethod
    def from_values(cls, values: Mapping[str, Any]):
        """Build a config from parameter values, checking types and ranges.

        Args:
            values: parameter name -> value (e.g. from rclpy or a YAML file); missing names take their defaults.
                Integers are accepted for float parameters.

        Raises:
            ConfigError: unknown name, wrong type or value out of range; the message names the parameter.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
        converted = {name: _convert(name, value, known[name].default) for name, value in values.items()}
        config = cls(**converted)
        config._validate()
        return config

    @classmethod
    def from_params_file(cls, path: str | Path | None = None, **overrides: Any):
        """Config from a ROS 2 parameters YAML file (e.g. config/depth.yaml; None: the defaults) and overrides.

        Takes ``ros__parameters`` of the ``/**`` entry and of any entry naming :attr:`NODE_NAME` (with or without
        a namespace), the latter winning, as a node of that name would receive them.

        Args:
            path: the parameters file, or None for the defaults.
            overrides: parameter name -> value; None values are ignored (e.g. CLI options not given).

        Raises:
            OSError: the file cannot be read.
            ConfigError: not YAML, no ``/**`` / node entry with ``ros__parameters``, or a value the node could not
                run with (names the parameter).
        """
        values = {}
        if path is not None:
            try:
                content = yaml.safe_load(Path(path).read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not a YAML parameters file: {exc}") from exc
            entries = [key for key in (content or {})
                       if key == "/**" or str(key).rsplit("/", 1)[-1] == cls.NODE_NAME]
            if not entries:
                raise ConfigError(f"{path}: no '/**' or '{cls.NODE_NAME}' entry with ros__parameters")
            entries.sort(key=lambda key: key != "/**")  # wildcard first, so the node's own values override it
            for key in entries:
                values.update((content[key] or {}).get("ros__parameters") or {})
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls.from_values(values)

    @classmethod
    def documentation(cls) -> dict[str, str]:
        """Parameter name -> description with units."""
        return {f.name: f.metadata["doc"] for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Parameter name -> default value (tuples as lists, the type rclpy declares arrays with)."""
        return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in fields(cls)}

    def _validate(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class NodeConfig(ParameterTable):
    """Typed, validated parameters of ``depth_node``. Units are in each field's documentation (``doc``)."""

    NODE_NAME = "depth_node"
    PARAMS_FILE = "config/depth.yaml"
    RUNTIME = ("checkpoint",)  # depth_node swaps the model between frames

    # --- model
    checkpoint: str = _param(
        DEFAULT_MODEL, "Metric checkpoint: .pth/.safetensors file or model id (depth_ros.checkpoints).")
    encoder: str = _param("", "ViT encoder (vits, vitb, vitl, vitg); empty: from the checkpoint metadata.")
    model_max_depth: float = _param(0.0, "Metric head's max depth in m; 0: from the checkpoint metadata.")
    device: str = _param("auto", "Torch device: auto (CUDA when available), cpu, cuda, cuda:N.")
    precision: str = _param("fp32", "Inference precision: fp32, fp16 or bf16.")
    input_size: int = _param(
        0, "px. Network input size of the shorter image side, a multiple of the architecture's size rule (14 Depth "
           "Anything V2, 32 PackNet; checked when the checkpoint loads); 0: the checkpoint's training size.")
    torch_compile: bool = _param(
        False, "Wrap the network in torch.compile (faster inference after a one-off compile at the first frame).")
    focal_correction: bool = _param(
        True, "Rescale metric depth by camera fx / training fx (needs CameraInfo and checkpoint focal).")
    backend: str = _param(
        "torch", f"Network runtime: {', '.join(BACKENDS)}; non-torch backends are checked against torch at start-up.")
    backend_model: str = _param(
        "", "ONNX file for a non-torch backend (depth_ros_export of the checkpoint); empty: exported to the cache.")
    backend_fallback: bool = _param(
        False, "Run torch when the backend cannot start or fails its self-check; false: refuse to start.")
    # --- input
    use_compressed: bool = _param(
        False, "Subscribe image/compressed (jpeg/png sensor_msgs/CompressedImage) instead of image.")
    reliable_input: bool = _param(False, "Reliable QoS for the input subscriptions; false: sensor-data profile.")
    use_rectified: bool = _param(
        True, "Intrinsics from CameraInfo P (rectified images, as image_geometry); false: from K.")
    camera_info_tolerance: float = _param(
        0.1, "s. CameraInfo with another stamp than the image is used when none matches; warn once if further apart. "
        "Reference depth must lie within this of the image's stamp.")
    max_image_pixels: int = _param(
        MAX_IMAGE_PIXELS, "px. Largest width x height of an input image (raw, or compressed: read from its header "
        "before decoding); larger images are dropped. Also bounds reference depth images.")
    use_reference_depth: bool = _param(
        False, "Subscribe reference_depth (32FC1 m or 16UC1 mm, registered to the image) and report AbsRel, RMSE "
        "and delta1 against it in the diagnostics.")
    reference_transport: str = _param(
        "raw", "reference_depth transport: raw (Image 32FC1 m / 16UC1 mm) or compressedDepth (image_transport, "
        "reference_depth/compressedDepth).")
    # --- depth output
    min_depth: float = _param(0.1, "m. Depth below is invalid (NaN in depth, no point).")
    max_depth: float = _param(20.0, "m. Depth above is invalid (NaN in depth, no point).")
    output_scale: float = _param(
        1.0, "Output size / input image size, in (0, 1]; depth, depth/camera_info, points and grid use it.")
    max_relative_sigma: float = _param(
        0.0, "Points and occupancy leave out pixels whose predicted sigma / depth exceeds this (or whose sigma is "
        "NaN); needs a checkpoint with a sigma head (else one warning, no gating); depth itself is not gated. 0: off.")
    # --- point cloud
    cloud_organized: bool = _param(
        True, "Organised cloud (height x width, NaN for invalid, is_dense false); false: dense list of valid points.")
    cloud_stride: int = _param(1, "px. Pixel stride of the dense cloud (needs cloud_organized: false).")
    colored: bool = _param(False, "Add an rgb field packed as depth_image_proc's point_cloud_xyzrgb.")
    voxel_size: float = _param(0.0, "m. Voxel down-sampling edge (open3d); 0: off. Needs cloud_organized: false.")
    cloud_max_range: float = _param(0.0, "m. Drop points further than this from the camera; 0: no limit.")
    # --- occupancy grid
    grid_frame: str = _param("base_link", "Frame of the occupancy grid (e.g. base_link or odom).")
    use_tf: bool = _param(True, "Camera pose from tf2 when the distro has tf2_ros; else camera_to_base is used.")
    camera_to_base: tuple[float, ...] = _param(
        DEFAULT_CAMERA_TO_BASE,
        "Static pose of the camera optical frame in grid_frame: [x, y, z] in m, [roll, pitch, yaw] in rad.")
    grid_resolution: float = _param(0.05, "m per cell.")
    grid_size_x: float = _param(10.0, "m. Grid extent along grid_frame x.")
    grid_size_y: float = _param(10.0, "m. Grid extent along grid_frame y.")
    grid_origin_x: float = _param(0.0, "m. x of cell (0, 0)'s lower-left corner in grid_frame.")
    grid_origin_y: float = _param(-5.0, "m. y of cell (0, 0)'s lower-left corner in grid_frame.")
    min_obstacle_height: float = _param(0.05, "m. Points at or above this height (grid_frame z) are obstacles.")
    max_obstacle_height: float = _param(1.5, "m. Points above this height (grid_frame z) are ignored.")
    grid_max_range: float = _param(5.0, "m. Only points within this distance of the camera mark or clear cells.")
    # --- diagnostics
    diagnostics_period: float = _param(1.0, f"s. Period of the /diagnostics status, >= {MIN_DIAGNOSTICS_PERIOD}.")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(width, height) of the occupancy grid in cells (grid size / resolution, rounded, at least 1)."""
        return (max(1, round(self.grid_size_x / self.grid_resolution)),
                max(1, round(self.grid_size_y / self.grid_resolution)))

    def _validate(self) -> None:
        cells = math.prod(self.grid_shape) if self.grid_resolution > 0 else 0
        checks = [
            (self.checkpoint != "", "checkpoint", "must name a checkpoint file or model id"),
            (self.encoder in ("",) + ENCODERS, "encoder", f"must be empty or one of {', '.join(ENCODERS)}"),
            (self.model_max_depth >= 0, "model_max_depth", "must be >= 0 m (0: from the checkpoint)"),
            (self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}"),
            (self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}"),
            (self.input_size >= 0, "input_size", "must be 0 (the checkpoint's) or a positive number of px"),
            (self.camera_info_tolerance >= 0, "camera_info_tolerance", "must be >= 0 s"),
            (self.reference_transport in DEPTH_TRANSPORTS, "reference_transport",
             f"must be one of {', '.join(DEPTH_TRANSPORTS)}"),
            (self.max_image_pixels >= MIN_IMAGE_PIXELS, "max_image_pixels",
             f"must be >= {MIN_IMAGE_PIXELS} px (one 14 x 14 network patch)"),
            (self.min_depth >= 0, "min_depth", "must be >= 0 m"),
            (self.max_depth > self.min_depth, "max_depth", f"must be > min_depth ({self.min_depth} m)"),
            (0 < self.output_scale <= 1, "output_scale", "must be in (0, 1]"),
            (self.max_relative_sigma >= 0, "max_relative_sigma", "must be >= 0 (0: off)"),
            (self.cloud_stride >= 1, "cloud_stride", "must be >= 1 px"),
            (self.cloud_stride == 1 or not self.cloud_organized, "cloud_stride",
             "> 1 needs cloud_organized: false"),
            (self.voxel_size >= 0, "voxel_size", "must be >= 0 m"),
            (self.voxel_size == 0 or not self.cloud_organized, "voxel_size", "> 0 needs cloud_organized: false"),
            (self.cloud_max_range >= 0, "cloud_max_range", "must be >= 0 m (0: no limit)"),
            (self.grid_frame != "", "grid_frame", "must not be empty"),
            (len(self.camera_to_base) == 6, "camera_to_base", "must have 6 numbers [x, y, z, roll, pitch, yaw]"),
            (self.grid_resolution > 0, "grid_resolution", "must be > 0 m"),
            (self.grid_size_x >= self.grid_resolution, "grid_size_x", "must be >= grid_resolution"),
            (self.grid_size_y >= self.grid_resolution, "grid_size_y", "must be >= grid_resolution"),
            (cells <= MAX_GRID_CELLS, "grid_resolution",
             f"gives {cells} grid cells, more than {MAX_GRID_CELLS}: raise it or reduce grid_size_x / grid_size_y"),
            (self.max_obstacle_height > self.min_obstacle_height, "max_obstacle_height",
             f"must be > min_obstacle_height ({self.min_obstacle_height} m)"),
            (self.grid_max_range > 0, "grid_max_range", "must be > 0 m"),
            (self.diagnostics_period >= MIN_DIAGNOSTICS_PERIOD, "diagnostics_period",
             f"must be >= {MIN_DIAGNOSTICS_PERIOD} s"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"parameter '{name}' {rule} (got {getattr(self, name)!r})")


def _convert(name: str, value: Any, default: Any) -> Any:
    """Value converted to the type of ``default`` (bool, int, float, str or tuple of finite floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # tuple of floats
        try:
            value = tuple(float(v) for v in value)
            ok = all(math.isfinite(v) for v in value)
        except (TypeError, ValueError):
            ok = False
    if not ok:
        kinds = {bool: "a boolean", int: "an integer", float: "a finite number", str: "a string",
                 tuple: "a list of finite numbers"}
        raise ConfigError(f"parameter '{name}' must be {kinds[type(default)]} (got {value!r})")
    return value


def declare_and_load(node, table: type[ParameterTable] = NodeConfig):
    """Declare every field of ``table`` as a parameter of ``node`` (read-only but for ``table.RUNTIME``) and return
    the validated config.

    Args:
        node: an ``rclpy.node.Node``; values come from its parameter overrides (``--ros-args -p``, params files).
        table: the node's parameter table (:class:`NodeConfig` for depth_node).

    Raises:
        ConfigError: as :meth:`ParameterTable.from_values`; also for an override naming no parameter of the node (a
            typo in a params file would otherwise be silently ignored by rclpy).
    """
    from rcl_interfaces.msg import ParameterDescriptor

    # rclpy has no public accessor for the overrides it was given; rclpy itself declares use_sim_time and the
    # qos_overrides.* / start_type_description_service parameters.
    overrides = getattr(node, "_parameter_overrides", {})
    unknown = sorted(name for name in overrides if name not in table.defaults()
                     and name not in ("use_sim_time", "start_type_description_service")
                     and not name.startswith("qos_overrides."))
    if unknown:
        raise ConfigError(f"unknown parameter(s): {', '.join(unknown)} (see {table.PARAMS_FILE} for the valid names)")

    values = {}
    for name, default in table.defaults().items():
        descriptor = ParameterDescriptor(
            description=table.documentation()[name], read_only=name not in table.RUNTIME, dynamic_typing=True)
        values[name] = node.declare_parameter(name, default, descriptor).value
    return table.from_values(values)
