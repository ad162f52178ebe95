"""Pinhole camera model: intrinsics from CameraInfo, back-projection of depth images and projection of points.

One camera abstraction for the node (clouds, grids), the bag tool and training (photometric warping), in the spirit
of PackNet-SfM's ``Camera`` (reconstruct / project / scaled). Coordinates follow REP 103 for optical frames: x right,
y down, z forward; depth is the z coordinate along the optical axis (REP 118), not the distance along the ray.

Pixel convention (as in OpenCV, image_geometry and depth_image_proc): integer pixel coordinates (u, v) = (column, row)
are pixel *centres*; the image covers [-0.5, width - 0.5] x [-0.5, height - 0.5].

Both numpy arrays and torch tensors are accepted by :meth:`PinholeCamera.backproject` and
:meth:`PinholeCamera.project`; the ray grid of each resolution is built once and cached (like Monodepth2's
``BackprojectDepth`` buffer).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

# Largest focal length per image pixel of a CameraInfo: fx <= MAX_FOCAL_PER_PIXEL * width (likewise fy, height), a
# field of view of about 1e-5 rad; far beyond any real lens, so a larger value is a broken calibration (e.g. 1e30).
MAX_FOCAL_PER_PIXEL = 1e5


def _is_tensor(x) -> bool:
    """True for a torch tensor (without importing torch when the caller never did)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _field(msg, *names):
    """The first of ``names`` that ``msg`` has (ROS 2 messages spell ``k``/``p``, ROS 1 ``K``/``P``)."""
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    raise ValueError(f"CameraInfo has no field {' or '.join(names)}")


@dataclass(frozen=True)
class PinholeCamera:
    """Ideal pinhole camera of one image resolution.

    Attributes:
        fx, fy: focal lengths in pixels (finite, > 0).
        cx, cy: principal point in pixels (pixel-centre convention, see the module docstring).
        width, height: image size in pixels (> 0).

    Raises:
        ValueError: on a non-finite or non-positive focal length, a non-finite principal point or an empty size.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("width", "height"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if not (math.isfinite(self.fx) and math.isfinite(self.fy) and self.fx > 0 and self.fy > 0):
            raise ValueError(f"camera focal length must be finite and > 0, got fx={self.fx}, fy={self.fy}")
        if not (math.isfinite(self.cx) and math.isfinite(self.cy)):
            raise ValueError(f"camera principal point must be finite, got cx={self.cx}, cy={self.cy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera image size must be > 0, got {self.width}x{self.height}")

    @classmethod
    def from_camera_info(cls, msg, use_rectified: bool = True) -> PinholeCamera:
        """Intrinsics of the image that a sensor_msgs/CameraInfo describes.

        As image_geometry's ``PinholeCameraModel.fromCameraInfo``: fx, fy, cx, cy come from P (the projection of
        rectified images) or, with ``use_rectified=False``, from K (raw images); binning and ROI are applied
        (``fx /= binning_x``, ``cx = (cx - roi.x_offset) / binning_x``, likewise for y; binning 0 means 1; an
        all-zero ROI means the full image). The image size is the ROI size divided by the binning. This is
        image_geometry's binning formula, which ignores the half-pixel shift that :meth:`resized` applies (a
        difference of (b - 1) / (2 b) pixels for binning b), so that both agree with the ROS tools.

        Args:
            msg: sensor_msgs/CameraInfo from rclpy or a rosbags dataclass (fields k/p or ROS 1 K/P, width, height,
                binning_x, binning_y, roi).
            use_rectified: read P (True, for ``image_rect`` topics) or K (False, for raw images).

        Raises:
            ValueError: naming the problem for malformed K/P, zero or non-finite focal length, one larger than
                :data:`MAX_FOCAL_PER_PIXEL` x width (or x height for fy), zero size or an ROI outside the image.
        """
        if use_rectified:
            matrix, name, (ifx, ify, icx, icy) = _field(msg, "p", "P"), "P", (0, 5, 2, 6)
            expected = 12
        else:
            matrix, name, (ifx, ify, icx, icy) = _field(msg, "k", "K"), "K", (0, 4, 2, 5)
            expected = 9
        if len(matrix) != expected:
            raise ValueError(f"CameraInfo {name} has {len(matrix)} elements, expected {expected}")
        fx, fy, cx, cy = (float(matrix[i]) for i in (ifx, ify, icx, icy))
        if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0):
            raise ValueError(f"CameraInfo {name} has an invalid focal length fx={fx}, fy={fy} (must be finite, > 0)")
        width, height = int(msg.width), int(msg.height)
        if width <= 0 or height <= 0:
            raise ValueError(f"CameraInfo has an empty image size {width}x{height}")
        if fx > MAX_FOCAL_PER_PIXEL * width or fy > MAX_FOCAL_PER_PIXEL * height:
            raise ValueError(f"CameraInfo {name} has an implausible focal length fx={fx:g}, fy={fy:g} for a "
                             f"{width}x{height} image (at most {MAX_FOCAL_PER_PIXEL:g} x width / height)")

        roi = msg.roi
        x_off, y_off, roi_w, roi_h = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
        if roi_w == 0 and roi_h == 0:
            if x_off or y_off:
                raise ValueError(f"CameraInfo roi has offsets ({x_off}, {y_off}) but zero size")
            roi_w, roi_h = width, height
        if roi_w <= 0 or roi_h <= 0 or x_off + roi_w > width or y_off + roi_h > height:
            raise ValueError(
                f"CameraInfo roi (x_offset={x_off}, y_offset={y_off}, {roi_w}x{roi_h}) does not fit the "
                f"{width}x{height} image"
            )
        bin_x, bin_y = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
        return cls(
            fx=fx / bin_x,
            fy=fy / bin_y,
            cx=(cx - x_off) / bin_x,
            cy=(cy - y_off) / bin_y,
            width=roi_w // bin_x,
            height=roi_h // bin_y,
        )

    def resized(self, width: int, height: int) -> PinholeCamera:
        """The camera of this image resized to ``width`` x ``height`` (e.g. by cv2.resize or F.interpolate).

        The outer edges of the image map onto each other (cv2.resize, torch ``align_corners=False``), so with
        integer pixel coordinates at pixel centres: ``fx' = fx * sx`` and ``cx' = (cx + 0.5) * sx - 0.5`` with
        ``sx = width / self.width`` (likewise for y).
        """
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )

    def cropped(self, left: int, top: int, width: int, height: int) -> PinholeCamera:
        """The camera of the ``width`` x ``height`` window whose top-left pixel is (``left``, ``top``)."""
        return replace(self, cx=self.cx - left, cy=self.cy - top, width=width, height=height)

    def flipped(self) -> PinholeCamera:
        """The camera of the left-right mirrored image (pixel column u -> width - 1 - u)."""
        return replace(self, cx=self.width - 1 - self.cx)

    @property
    def K(self) -> np.ndarray:
        """3x3 float64 intrinsic matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def backproject(self, depth):
        """Back-project a depth image to 3-D points in the camera optical frame (REP 103: x right, y down, z fwd).

        ``X = (u - cx) / fx * Z``, ``Y = (v - cy) / fy * Z`` per pixel (u = column, v = row), like depth_image_proc's
        ``convertDepth`` and PackNet-SfM's ``Camera.reconstruct``.

        Args:
            depth: (..., height, width) depth Z in metres along the optical axis; NaN (invalid) stays NaN in all
                three coordinates. float numpy array or torch tensor (any device; batched leading dims allowed).

        Returns:
            (..., height, width, 3) points, float32 for numpy input, the input's dtype/device for torch input.

        Raises:
            ValueError: when the last two dims of ``depth`` are not (height, width).
        """
        if tuple(depth.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"depth of shape {tuple(depth.shape)} does not match the {self.width}x{self.height} camera; "
                "use camera.resized(width, height)"
            )
        if _is_tensor(depth):
            return _torch_ray_grid(self, depth.device, depth.dtype) * depth.unsqueeze(-1)
        return _ray_grid(self) * np.asarray(depth, dtype=np.float32)[..., None]

    def project(self, points):
        """Project 3-D points in the camera optical frame to pixel coordinates.

        ``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy`` (inverse of :meth:`backproject`).

        Args:
            points: (..., 3) points in metres, numpy array or torch tensor.

        Returns:
            (uv, z): uv (..., 2) pixel coordinates (u = column, v = row), NaN for points with Z <= 0 (behind the
            camera; computed without dividing by Z <= 0, so torch gradients stay finite); z (...,) the depth Z.
        """
        if _is_tensor(points):
            import torch

            x, y, z = points[..., 0], points[..., 1], points[..., 2]
            visible = z > 0
            safe_z = torch.where(visible, z, torch.ones_like(z))
            uv = torch.stack((self.fx * x / safe_z + self.cx, self.fy * y / safe_z + self.cy), dim=-1)
            return torch.where(visible.unsqueeze(-1), uv, torch.full_like(uv, float("nan"))), z
        points = np.asarray(points)
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        visible = z > 0
        safe_z = np.where(visible, z, 1.0)
        uv = np.stack((self.fx * x / safe_z + self.cx, self.fy * y / safe_z + self.cy), axis=-1)
        uv[~visible] = np.nan
        return uv, z


@lru_cache(maxsize=16)
def _ray_grid(camera: PinholeCamera) -> np.ndarray:
    """Read-only (height, width, 3) float32 ((u - cx) / fx, (v - cy) / fy, 1); pixel (u, v) at depth Z is Z times it."""
    u = (np.arange(camera.width, dtype=np.float64) - camera.cx) / camera.fx
    v = (np.arange(camera.height, dtype=np.float64) - camera.cy) / camera.fy
    grid = np.ones((camera.height, camera.width, 3), dtype=np.float32)
    grid[..., 0] = u[None, :]
    grid[..., 1] = v[:, None]
    grid.flags.writeable = False
    return grid


@lru_cache(maxsize=16)
def _torch_ray_grid(camera: PinholeCamera, device, dtype):
    import torch

    return torch.from_numpy(_ray_grid(camera).copy()).to(device=device, dtype=dtype)


def check_camera_matches(camera: PinholeCamera, height: int, width: int) -> None:
    """Raise ValueError naming both sizes when the camera does not describe an image of ``width`` x ``height``."""
    if (camera.width, camera.height) != (width, height):
        raise ValueError(
            f"CameraInfo describes a {camera.width}x{camera.height} image (after binning/ROI) but the image is "
            f"{width}x{height}"
        )
