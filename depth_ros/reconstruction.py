"""Scene reconstruction from one camera: TSDF fusion of metric depth images at known camera poses (open3d).

The volume is open3d's tensor :class:`open3d.t.geometry.VoxelBlockGrid` (Dong et al., "ASH: A Modern Framework for
Parallel Spatial Hashing in 3D Perception", TPAMI 2022; the TSDF of Curless & Levoy, SIGGRAPH 1996, as in
KinectFusion): voxel blocks of 8^3 voxels allocated around the observed surface only, each voxel holding a
truncated signed distance, a weight and an RGB colour (20 bytes). On this project's 2-core CPU it integrates
640x480 frames at about 110 frames/s, on par with the legacy ``ScalableTSDFVolume`` (about 108), and counts
its blocks, which bounds the memory (bench/bench_reconstruction.py, docs/reconstruction.md).

Frames and units: depth in metres along the optical axis (REP 118, NaN or 0 invalid), intrinsics of that depth
image, camera poses ``T_fixed_camera`` (camera optical frame, REP 103, to the fixed frame: odom, map, world; REP 105)
as :func:`depth_ros.data.poses.load_camera_trajectory` gives them; the mesh and cloud are in the fixed frame.

:class:`Fusion` adds the input checks of a recording: a frame without pose, with a pose jump or of another image
size is skipped and counted (:class:`FusionReport`), never integrated.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import FREE, OCCUPIED, UNKNOWN, GridSpec
from depth_ros.geometry.transform import invert_transform, motion, relative_pose

BLOCK_RESOLUTION = 8  # voxels per block edge
VOXEL_BYTES = 4 + 4 + 3 * 4  # tsdf, weight, colour (float32)
INITIAL_BLOCKS = 2000  # hash map capacity at the start (20 MiB); it grows as blocks are allocated


class NoDepth(ValueError):
    """A depth image without a valid pixel in the volume's depth range."""


class VolumeFull(ValueError):
    """Integrating a frame would allocate more voxel blocks than :attr:`TSDFOptions.max_blocks`."""


@dataclass(frozen=True)
class TSDFOptions:
    """TSDF volume parameters.

    Attributes:
        voxel_size: voxel edge in metres (2 cm: the usual indoor choice, e.g. Atlas / NeuralRecon evaluate at 4 cm).
        truncation: truncation distance of the signed distance in metres (4 voxels).
        min_depth, max_depth: depth used, metres along the optical axis; other pixels are ignored (Kinect-class
            sensors and indoor models are reliable to about 4 m).
        max_blocks: memory bound: at most this many voxel blocks (8^3 voxels, 10 KiB each; 30000 = 300 MiB,
            about 190 m^2 of surface at 2 cm); a frame that would need more is refused (:class:`VolumeFull`).

    Raises:
        ValueError: a non-positive voxel size, a truncation below one voxel, an empty depth range or max_blocks < 1.
    """

    voxel_size: float = 0.02
    truncation: float = 0.08
    min_depth: float = 0.1
    max_depth: float = 4.0
    max_blocks: int = 30000

    def __post_init__(self):
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 m, got {self.voxel_size}")
        if not self.truncation >= self.voxel_size:
            raise ValueError(f"truncation {self.truncation} m must be at least one voxel ({self.voxel_size} m)")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {self.min_depth} and {self.max_depth}")
        if not self.max_blocks >= 1:
            raise ValueError(f"max_blocks must be >= 1, got {self.max_blocks}")

    @property
    def block_bytes(self) -> int:
        """Bytes of voxel data in one block."""
        return BLOCK_RESOLUTION ** 3 * VOXEL_BYTES


class TSDFVolume:
    """A TSDF volume (open3d tensor VoxelBlockGrid on the CPU) that integrates depth images at camera poses.

    Args:
        options: volume parameters.
    """

    def __init__(self, options: TSDFOptions | None = None):
        import open3d as o3d

        self.options = options or TSDFOptions()
        self._o3d = o3d
        self._device = o3d.core.Device("CPU:0")
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3d.core.float32, o3d.core.float32, o3d.core.float32), attr_channels=((1), (1), (3)),
            voxel_size=self.options.voxel_size, block_resolution=BLOCK_RESOLUTION,
            block_count=min(self.options.max_blocks, INITIAL_BLOCKS), device=self._device)

    @property
    def block_count(self) -> int:
        """Voxel blocks allocated so far."""
        return int(self.grid.hashmap().size())

    @property
    def memory_bytes(self) -> int:
        """Bytes of voxel data allocated (``block_count`` blocks; the hash map's own capacity comes on top)."""
        return self.block_count * self.options.block_bytes

    def integrate(self, depth: np.ndarray, camera: PinholeCamera, T_fixed_camera: np.ndarray,
                  rgb: np.ndarray | None = None) -> None:
        """Fuse one depth image.

        Args:
            depth: (H, W) float32 metres along the optical axis, NaN / 0 invalid; pixels outside
                ``[min_depth, max_depth]`` are ignored.
            camera: intrinsics of ``depth`` (W x H).
            T_fixed_camera: (4, 4) pose of the camera optical frame in the fixed frame (camera-to-fixed).
            rgb: (H, W, 3) uint8 colour registered to ``depth``; None: grey.

        Raises:
            ValueError: depth, rgb and camera sizes differ.
            NoDepth: no pixel in ``[min_depth, max_depth]`` (nothing integrated).
            VolumeFull: the frame would exceed ``max_blocks`` (nothing integrated).
        """
        o3d, opts = self._o3d, self.options
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (camera.height, camera.width) or (rgb is not None and rgb.shape[:2] != depth.shape):
            raise ValueError(f"depth {depth.shape}, colour {None if rgb is None else rgb.shape[:2]} and camera "
                             f"{camera.height}x{camera.width} sizes differ")
        with np.errstate(invalid="ignore"):
            depth = np.where(depth >= opts.min_depth, depth, np.float32(0.0))
            if not ((depth > 0) & (depth <= opts.max_depth)).any():
                raise NoDepth(f"no depth in {opts.min_depth}-{opts.max_depth} m")
        depth_image = o3d.t.geometry.Image(o3d.core.Tensor(np.ascontiguousarray(depth)))
        colors = np.full(depth.shape + (3,), 0.5, np.float32) if rgb is None else rgb.astype(np.float32) / 255.0
        color_image = o3d.t.geometry.Image(o3d.core.Tensor(colors))
        intrinsic = o3d.core.Tensor(camera.K, o3d.core.float64)
        extrinsic = o3d.core.Tensor(invert_transform(np.asarray(T_fixed_camera, np.float64)), o3d.core.float64)
        multiplier = opts.truncation / opts.voxel_size
        blocks = self.grid.compute_unique_block_coordinates(depth_image, intrinsic, extrinsic, 1.0, opts.max_depth,
                                                            trunc_voxel_multiplier=multiplier)
        _, found = self.grid.hashmap().find(blocks)
        new = int(blocks.shape[0]) - int(found.to(o3d.core.int64).sum().item())
        if self.block_count + new > opts.max_blocks:
            raise VolumeFull(f"the volume would need {self.block_count + new} voxel blocks, more than max_blocks "
                             f"{opts.max_blocks}")
        self.grid.integrate(blocks, depth_image, color_image, intrinsic, intrinsic, extrinsic, 1.0, opts.max_depth,
                            trunc_voxel_multiplier=multiplier)

    def mesh(self):
        """The zero-level surface (marching cubes) as a legacy ``open3d.geometry.TriangleMesh`` in the fixed frame,
        vertex colours RGB in [0, 1]; empty when nothing was integrated."""
        if self.block_count == 0:
            return self._o3d.geometry.TriangleMesh()
        mesh = self.grid.extract_triangle_mesh(weight_threshold=1.0).to_legacy()
        mesh.vertex_colors = self._o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors), 0.0, 1.0))
        return mesh

    def point_cloud(self):
        """Surface points (zero crossings) as a legacy coloured ``open3d.geometry.PointCloud`` in the fixed frame."""
        if self.block_count == 0:
            return self._o3d.geometry.PointCloud()
        cloud = self.grid.extract_point_cloud(weight_threshold=1.0).to_legacy()
        cloud.colors = self._o3d.utility.Vector3dVector(np.clip(np.asarray(cloud.colors), 0.0, 1.0))
        return cloud


@dataclass
class FusionReport:
    """What :class:`Fusion` did.

    Attributes:
        integrated: frames fused into the volume.
        skipped: reason -> frames skipped (``no pose``, ``pose jump``, ``image size``, ``no depth``, ``volume full``,
            and the
            callers' own, e.g. ``unreadable``).
        integration_seconds: time spent in :meth:`TSDFVolume.integrate`.
        poses: (M, 4, 4) poses of the integrated frames, in order.
    """

    integrated: int = 0
    skipped: Counter = field(default_factory=Counter)
    integration_seconds: float = 0.0
    poses: list[np.ndarray] = field(default_factory=list)

    def line(self) -> str:
        """One line: frames integrated, skipped per reason, integration time per frame."""
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        per_frame = 1e3 * self.integration_seconds / max(self.integrated, 1)
        return f"{self.integrated} frames integrated ({per_frame:.1f} ms each); skipped: {skipped}"


class Fusion:
    """A :class:`TSDFVolume` fed frame by frame with the checks of a recording.

    A frame is skipped and counted when it has no pose, when its pose moved more than ``max_jump_translation`` m
    or ``max_jump_rotation`` degrees from the previous frame's (a relocalisation or odometry reset; the previous
    frame is the last one offered with a pose, integrated or not), when its image size differs from the first
    frame's, when it has no depth in the volume's range, or when the volume is full.

    Args:
        options: volume parameters.
        max_jump_translation: metres between consecutive offered frames above which the pose counts as a jump.
        max_jump_rotation: degrees, likewise.
    """

    def __init__(self, options: TSDFOptions | None = None, max_jump_translation: float = 0.3,
                 max_jump_rotation: float = 30.0):
        self.volume = TSDFVolume(options)
        self.max_jump = (max_jump_translation, max_jump_rotation)
        self.report = FusionReport()
        self.size: tuple[int, int] | None = None
        self._last_pose: np.ndarray | None = None

    def skip(self, reason: str) -> None:
        """Count a frame skipped for ``reason``."""
        self.report.skipped[reason] += 1

    def add(self, depth: np.ndarray, camera: PinholeCamera, T_fixed_camera: np.ndarray | None,
            rgb: np.ndarray | None = None) -> str | None:
        """Integrate one frame unless it must be skipped (see the class docstring; arguments as
        :meth:`TSDFVolume.integrate`, ``T_fixed_camera`` None for a frame without pose).

        Returns:
            None when integrated, else the reason the frame was skipped (also counted in :attr:`report`).
        """
        reason = self._check(np.shape(depth), camera, T_fixed_camera)
        if reason is None:
            start = time.perf_counter()
            try:
                self.volume.integrate(depth, camera, T_fixed_camera, rgb)
            except VolumeFull:
                reason = "volume full"
            except NoDepth:
                reason = "no depth"
            self.report.integration_seconds += time.perf_counter() - start
        if reason is None:
            self.report.integrated += 1
            self.report.poses.append(np.asarray(T_fixed_camera, np.float64))
        else:
            self.skip(reason)
        return reason

    def _check(self, shape: tuple[int, ...], camera: PinholeCamera, pose: np.ndarray | None) -> str | None:
        if pose is None:
            return "no pose"
        last, self._last_pose = self._last_pose, np.asarray(pose, np.float64)
        if self.size is None:
            self.size = tuple(shape)
        if tuple(shape) != self.size or tuple(shape) != (camera.height, camera.width):
            return "image size"
        if last is not None:
            translation, rotation = motion(relative_pose(last, pose))
            if translation > self.max_jump[0] or rotation > self.max_jump[1]:
                return "pose jump"
        return None


def levelled_frame(poses: np.ndarray, points: np.ndarray, floor_percentile: float = 1.0) -> np.ndarray:
    """``T_level_fixed``: a frame whose +z is the cameras' mean up direction and whose z = 0 is the floor.

    For fixed frames that are not gravity-aligned (e.g. a SLAM or KinectFusion world, the first camera's frame):
    the rotation takes the mean of the cameras' up vectors (-y of the optical frame, REP 103) to +z, so it suits a
    camera held roughly level, as on a robot; the floor is the ``floor_percentile`` percentile of the points' height.

    Args:
        poses: (M, 4, 4) ``T_fixed_camera``.
        points: (N, 3) surface points in the fixed frame, metres.
        floor_percentile: percentile of the heights taken as z = 0.

    Returns:
        (4, 4) float64 rigid transform mapping fixed-frame points into the levelled frame.
    """
    from scipy.spatial.transform import Rotation

    up = -np.asarray(poses)[:, :3, 1].mean(axis=0)
    rotation, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [up / np.linalg.norm(up)])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation.as_matrix()
    heights = np.asarray(points, np.float64) @ matrix[2, :3]
    matrix[2, 3] = -np.percentile(heights, floor_percentile) if len(heights) else 0.0
    return matrix


def surface_occupancy(points: np.ndarray, resolution: float, min_obstacle_height: float,
                      max_obstacle_height: float, margin: int = 2) -> tuple[np.ndarray, GridSpec]:
    """A 2-D occupancy grid projected from reconstructed surface points (nav_msgs/OccupancyGrid conventions of
    :mod:`depth_ros.geometry.occupancy`: values 100 / 0 / -1, ``grid[row, col]`` with rows along +y).

    A cell holding a point with ``min_obstacle_height <= z <= max_obstacle_height`` is occupied; a cell holding only
    floor points (z below the band) is free; the rest (no surface seen, or only above the band) is unknown. The
    grid spans the points' x-y extent plus ``margin`` cells.

    Args:
        points: (N, 3) surface points in the grid frame (z up, REP 105), metres.
        resolution: cell edge in metres.
        min_obstacle_height: lower end of the obstacle band in metres (as depth_node's parameter).
        max_obstacle_height: upper end of the band in metres.
        margin: unknown cells around the extent.

    Returns:
        (grid (rows, cols) int8, its :class:`GridSpec`).

    Raises:
        ValueError: no point, or an empty height band.
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        raise ValueError("no surface point to project into an occupancy grid")
    if not min_obstacle_height < max_obstacle_height:
        raise ValueError(f"min_obstacle_height {min_obstacle_height} must be < max_obstacle_height "
                         f"{max_obstacle_height}")
    low = np.floor(points[:, :2].min(axis=0) / resolution) - margin
    high = np.floor(points[:, :2].max(axis=0) / resolution) + margin + 1
    spec = GridSpec(resolution, int(high[0] - low[0]), int(high[1] - low[1]), low[0] * resolution,
                    low[1] * resolution)
    cells = np.floor(spec.cell_coordinates(points[:, :2])).astype(np.int64)
    flat = cells[:, 1] * spec.width + cells[:, 0]
    grid = np.full(spec.width * spec.height, UNKNOWN, np.int8)
    z = points[:, 2]
    grid[flat[z < min_obstacle_height]] = FREE
    grid[flat[(z >= min_obstacle_height) & (z <= max_obstacle_height)]] = OCCUPIED
    return grid.reshape(spec.height, spec.width), spec
