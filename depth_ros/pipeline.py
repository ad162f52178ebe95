"""The depth pipeline of depth_node as plain Python: RGB + camera in; depth, point cloud and occupancy grid out.

No rclpy here, so the node, the bag tool, the demo and the benchmarks run the very same code. Each stage is a method
of its own so that callers can time it (:meth:`DepthPipeline.run` records those times itself):

    preprocess (resize + normalise) -> inference (network) -> postprocess (upsample to the output size, focal
    correction, NaN outside [min_depth, max_depth]) -> cloud (back-projection, layout) -> grid (points moved into
    the grid frame, ray casting)

Uncertainty (checkpoints with a sigma head): inference also yields sigma, postprocess converts it like depth
(``PipelineOutput.uncertainty``), and with ``max_relative_sigma`` the cloud and the grid only see the pixels that
:func:`sigma_gate` keeps.

Frames and units: depth in metres along the optical axis (REP 118); points in the camera optical frame (REP 103);
the grid in the frame that ``camera_to_grid`` maps into (z up, REP 105).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from depth_ros.estimator import DepthEstimator
from depth_ros.geometry.camera import PinholeCamera, check_camera_matches
from depth_ros.geometry.occupancy import GridSpec, occupancy_grid
from depth_ros.geometry.pointcloud import build_cloud
from depth_ros.geometry.transform import transform_points


@dataclass(frozen=True)
class CloudOptions:
    """Layout of the ``points`` cloud (see :func:`depth_ros.geometry.pointcloud.build_cloud`).

    Attributes:
        organised: image layout with NaN for invalid points (True) or a dense list of valid points (False).
        stride: keep every ``stride``-th pixel row and column.
        colored: add the packed ``rgb`` field (colours of the input image at the output size).
        max_range: drop points farther than this from the camera centre, metres; None: no limit.
        voxel_size: voxel down-sampling edge in metres (dense clouds only); None: off.
    """

    organised: bool = True
    stride: int = 1
    colored: bool = False
    max_range: float | None = None
    voxel_size: float | None = None


@dataclass(frozen=True)
class GridOptions:
    """Occupancy grid geometry and classification (see :func:`depth_ros.geometry.occupancy.occupancy_grid`).

    Attributes:
        spec: resolution (m), size (cells) and origin (m, lower-left corner of cell (0, 0)) in the grid frame.
        min_obstacle_height, max_obstacle_height: obstacle height band in metres (grid-frame z).
        max_range: only points within this distance (m) of the camera mark or clear cells.
    """

    spec: GridSpec
    min_obstacle_height: float = 0.05
    max_obstacle_height: float = 1.5
    max_range: float = 5.0


@dataclass
class PipelineOutput:
    """Everything one frame produced; optional parts are None when not requested or not computable.

    Attributes:
        depth: (h, w) float32 metres at the output size, NaN outside [min_depth, max_depth] (what is published).
        prediction: the same depth before the validity range is applied (for accuracy metrics).
        camera: intrinsics of ``depth`` (the input camera scaled to the output size), None without a camera.
        uncertainty: (h, w) float32 sigma of ``depth`` in metres, NaN where depth is; None when not computed (not
            requested and no gating, or a model without a sigma head).
        cloud: structured point array (:mod:`depth_ros.geometry.pointcloud` layout), optical frame.
        grid: (rows, cols) int8 occupancy grid (100 occupied, 0 free, -1 unknown), rows along grid-frame +y.
        timings: seconds per stage run: preprocess, inference, postprocess, cloud, grid.
    """

    depth: np.ndarray
    prediction: np.ndarray
    camera: PinholeCamera | None = None
    uncertainty: np.ndarray | None = None
    cloud: np.ndarray | None = None
    grid: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class DepthPipeline:
    """Metric depth, point cloud and occupancy grid from one RGB image.

    Args:
        estimator: a metric :class:`~depth_ros.estimator.DepthEstimator`.
        min_depth, max_depth: validity range in metres; depth outside it becomes NaN (no point, no grid cell).
        output_scale: output size / input size in (0, 1]; the network output is upsampled straight to it.
        cloud: point cloud layout.
        grid: occupancy grid options; None: :meth:`run` makes no grid.
        max_relative_sigma: > 0: the cloud and the grid use only the pixels :func:`sigma_gate` keeps at this
            threshold (when the estimator :attr:`~DepthEstimator.has_uncertainty`; :attr:`gating` says whether it
            does); 0: off.

    Raises:
        ValueError: a relative (non-metric) estimator, an empty depth range, an output scale outside (0, 1] or a
            negative max_relative_sigma.
    """

    def __init__(self, estimator: DepthEstimator, *, min_depth: float = 0.1, max_depth: float = 20.0,
                 output_scale: float = 1.0, cloud: CloudOptions | None = None, grid: GridOptions | None = None,
                 max_relative_sigma: float = 0.0):
        if not estimator.is_metric:
            raise ValueError("the checkpoint has a relative (inverse-depth) head; metric depth needs a metric model")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}")
        if not 0 < output_scale <= 1:
            raise ValueError(f"output_scale must be in (0, 1], got {output_scale}")
        if not max_relative_sigma >= 0:
            raise ValueError(f"max_relative_sigma must be >= 0 (0: off), got {max_relative_sigma}")
        self.max_relative_sigma = max_relative_sigma
        self.estimator = estimator
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.output_scale = output_scale
        self.cloud_options = cloud or CloudOptions()
        self.grid_options = grid

    @classmethod
    def from_config(cls, config, estimator: DepthEstimator | None = None) -> DepthPipeline:
        """Pipeline for a :class:`depth_ros.ros.params.NodeConfig` (e.g. loaded from config/depth.yaml).

        Args:
            config: the node's parameters (model, depth range, output scale, cloud and grid options).
            estimator: an estimator to reuse; None loads ``config.checkpoint``.

        Raises:
            CheckpointError: the checkpoint cannot be loaded.
            BackendError: the backend cannot start or fails its self-check (without ``backend_fallback``).
            ValueError: bad device/precision, or a relative checkpoint.
        """
        if estimator is None:
            estimator = DepthEstimator.from_checkpoint(
                config.checkpoint, encoder=config.encoder or None, max_depth=config.model_max_depth or None,
                device=config.device, precision=config.precision, input_size=config.input_size or None,
                focal_correction=config.focal_correction, compile=config.torch_compile, backend=config.backend,
                backend_model=config.backend_model or None, backend_fallback=config.backend_fallback)
        width, height = config.grid_shape
        spec = GridSpec(
            resolution=config.grid_resolution,
            width=width,
            height=height,
            origin_x=config.grid_origin_x,
            origin_y=config.grid_origin_y,
        )
        return cls(
            estimator,
            min_depth=config.min_depth,
            max_depth=config.max_depth,
            output_scale=config.output_scale,
            cloud=CloudOptions(
                organised=config.cloud_organized, stride=config.cloud_stride, colored=config.colored,
                max_range=config.cloud_max_range or None, voxel_size=config.voxel_size or None),
            grid=GridOptions(spec, config.min_obstacle_height, config.max_obstacle_height, config.grid_max_range),
            max_relative_sigma=config.max_relative_sigma,
        )

    @property
    def gating(self) -> bool:
        """True when the cloud and grid are sigma-gated: ``max_relative_sigma`` > 0 and the model gives sigma."""
        return self.max_relative_sigma > 0 and self.estimator.has_uncertainty

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output ``(height, width)`` in pixels for an input image of that size (rounded, at least 1)."""
        return max(1, round(height * self.output_scale)), max(1, round(width * self.output_scale))

    # --- stages -----------------------------------------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray):
        """HxWx3 uint8 RGB -> network input tensor (see :meth:`DepthEstimator.preprocess`; ValueError if bad)."""
        return self.estimator.preprocess(rgb)

    def infer(self, tensor, with_sigma: bool = False):
        """Network input -> raw (1, h, w) metric output tensor; with ``with_sigma`` the pair (raw depth, raw sigma)
        (:meth:`DepthEstimator.forward`)."""
        return self.estimator.forward(tensor, with_sigma=with_sigma)

    def postprocess(self, raw, image_size: tuple[int, int], camera: PinholeCamera | None = None):
        """Raw network output -> depth at the output size.

        Args:
            raw: (1, h, w) network output.
            image_size: (H, W) of the input image in pixels.
            camera: intrinsics of the input image, or None; gives the focal correction and the output camera.

        Returns:
            (depth, prediction, output_camera): depth with NaN outside [min_depth, max_depth] and the prediction
            before that, both (h, w) float32 metres; the camera scaled to (h, w), or None.

        Raises:
            ValueError: when ``camera`` does not describe an image of ``image_size``.
        """
        height, width = self.output_size(*image_size)
        out_camera = None
        if camera is not None:
            check_camera_matches(camera, *image_size)
            out_camera = camera if (height, width) == tuple(image_size) else camera.resized(width, height)
        prediction = self.estimator.postprocess(raw, (height, width), None if out_camera is None else out_camera.fx)
        return _nan_outside(prediction, self.min_depth, self.max_depth), prediction, out_camera

    def postprocess_sigma(self, raw_sigma, depth: np.ndarray, camera: PinholeCamera | None) -> np.ndarray:
        """Raw (1, h', w') network sigma -> (h, w) float32 sigma in metres at ``depth``'s size, scaled and upsampled
        exactly as depth (same factor, :mod:`depth_ros.published_depth`), NaN where ``depth`` is NaN.

        Args:
            raw_sigma: from :meth:`infer` with ``with_sigma``.
            depth: this frame's depth from :meth:`postprocess`.
            camera: the output camera from :meth:`postprocess` (its fx gives the focal factor), or None.
        """
        sigma = self.estimator.postprocess(raw_sigma, depth.shape, None if camera is None else camera.fx)
        return np.where(np.isnan(depth), np.float32(math.nan), sigma)

    def points(self, depth: np.ndarray, camera: PinholeCamera) -> np.ndarray:
        """(h, w, 3) float32 points in the optical frame (NaN where depth is NaN); ``camera`` of the depth's size."""
        return camera.backproject(depth)

    def cloud(self, points: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
        """Structured cloud from (h, w, 3) points, coloured from the input image ``rgb`` when ``colored``."""
        options = self.cloud_options
        colors = None
        if options.colored and rgb is not None:
            height, width = points.shape[:2]
            colors = rgb if rgb.shape[:2] == (height, width) else cv2.resize(
                rgb, (width, height), interpolation=cv2.INTER_AREA)
        return build_cloud(points, colors, organised=options.organised, stride=options.stride,
                           max_range=options.max_range, voxel_size=options.voxel_size)

    def grid(self, points: np.ndarray, camera_to_grid: np.ndarray) -> np.ndarray:
        """Occupancy grid from optical-frame points.

        Args:
            points: (..., 3) float32 points in the camera optical frame, NaN where invalid.
            camera_to_grid: 4x4 transform mapping optical-frame points into the grid frame (``T_grid_camera``).

        Returns:
            (spec.height, spec.width) int8 grid.

        Raises:
            ValueError: when the pipeline has no grid options.
        """
        if self.grid_options is None:
            raise ValueError("this pipeline was built without grid options")
        options = self.grid_options
        in_grid = transform_points(camera_to_grid, points.reshape(-1, 3))
        return occupancy_grid(in_grid, options.spec, camera_to_grid[:3, 3],
                              min_obstacle_height=options.min_obstacle_height,
                              max_obstacle_height=options.max_obstacle_height, max_range=options.max_range)

    # --- all stages -------------------------------------------------------------------------------------------
    def run(self, rgb: np.ndarray, camera: PinholeCamera | None = None, camera_to_grid: np.ndarray | None = None,
            *, want_cloud: bool = True, want_grid: bool = True, want_uncertainty: bool = False) -> PipelineOutput:
        """Run the stages on one image, timing each.

        Args:
            rgb: (H, W, 3) uint8 RGB image.
            camera: intrinsics of that image (e.g. ``PinholeCamera.from_camera_info``); None: depth only (no focal
                correction, no cloud, no grid).
            camera_to_grid: 4x4 ``T_grid_camera``; None: no grid.
            want_cloud: make the cloud when it can be made (False e.g. while nobody subscribes).
            want_grid: likewise for the grid.
            want_uncertainty: fill ``uncertainty`` (when the model has a sigma head; it is also computed, and then
                returned, whenever :attr:`gating` needs it for the cloud or grid).

        Returns:
            :class:`PipelineOutput`; ``timings`` has preprocess, inference, postprocess and, when made, cloud
            (back-projection + layout) and grid (back-projection if not done for the cloud + ray casting). With
            :attr:`gating`, the cloud and the grid are made from :func:`sigma_gate` of the depth.

        Raises:
            ValueError: a malformed image (not HxWx3 uint8, smaller than 14 px) or a camera of another size.
        """
        timings = {}
        start = time.perf_counter()
        tensor = self.preprocess(rgb)
        timings["preprocess"], start = _lap(start)
        geometry = camera is not None and (want_cloud or (want_grid and camera_to_grid is not None))
        with_sigma = self.estimator.has_uncertainty and (want_uncertainty or (self.gating and geometry))
        raw, raw_sigma = self.infer(tensor, with_sigma) if with_sigma else (self.infer(tensor), None)
        timings["inference"], start = _lap(start)
        depth, prediction, out_camera = self.postprocess(raw, rgb.shape[:2], camera)
        sigma = None if raw_sigma is None else self.postprocess_sigma(raw_sigma, depth, out_camera)
        timings["postprocess"], start = _lap(start)
        output = PipelineOutput(depth, prediction, out_camera, sigma, timings=timings)
        if out_camera is None:
            return output
        if self.gating:
            depth = sigma_gate(depth, sigma, self.max_relative_sigma)
        points = None
        if want_cloud:
            points = self.points(depth, out_camera)
            output.cloud = self.cloud(points, rgb)
            timings["cloud"], start = _lap(start)
        if want_grid and camera_to_grid is not None and self.grid_options is not None:
            points = self.points(depth, out_camera) if points is None else points
            output.grid = self.grid(points, camera_to_grid)
            timings["grid"], start = _lap(start)
        return output


def _lap(start: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - start, now


def sigma_gate(depth: np.ndarray, sigma: np.ndarray, max_relative_sigma: float) -> np.ndarray:
    """Copy of ``depth`` with NaN where the relative uncertainty ``sigma / depth`` exceeds ``max_relative_sigma``.

    Args:
        depth: (h, w) float32 metres, NaN invalid.
        sigma: (h, w) predicted standard deviation of ``depth`` in metres; a NaN sigma drops the pixel.
        max_relative_sigma: the threshold (> 0), e.g. 0.1 keeps pixels whose sigma is at most 10 % of their depth.

    Returns:
        (h, w) float32 depth with the uncertain pixels NaN (no point, no ray: grid cells seen only through them
        stay unknown).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = sigma <= max_relative_sigma * depth
    return np.where(keep, depth, np.float32(math.nan))


def _nan_outside(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    """Copy of ``depth`` with NaN where it is not inside [low, high] (also where it already was NaN)."""
    with np.errstate(invalid="ignore"):
        return np.where((depth >= low) & (depth <= high), depth, np.float32(math.nan))
