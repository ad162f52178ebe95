"""Temporal fusion of depth with its uncertainty: the previous fused depth and sigma, forward-warped into the current
frame with the camera motion, combined with the current prediction by inverse-variance weighting (issue 18, part 2).

Per pixel, a Kalman-style update with a static-scene model: the warped previous estimate ``(w, s_w)`` (sigma grown by
``process_noise`` x depth per frame, so old information fades) and the prediction ``(d, s)`` give

    fused = (d / s^2 + w / s_w^2) / (1 / s^2 + 1 / s_w^2),   sigma = (1 / s^2 + 1 / s_w^2) ^ -1/2

where they agree within ``max_disagreement`` combined sigmas; elsewhere (occlusion, a moving object, no warped
estimate) the pixel restarts from the prediction. The whole state restarts when the camera, the model or the clock
changes under it: no pose, a stamp not after the previous one (clock jump back), a gap longer than ``max_gap``, another
image size or intrinsics, or another model id. Forward warping (Zhou et al. 2017's geometry, run forwards): every
previous pixel is back-projected with its depth (:meth:`PinholeCamera.backproject`), moved with
``T_current_previous`` and projected (:meth:`PinholeCamera.project`) to the nearest pixel, the nearest point winning
where several land (z-buffer).

Not wired into depth_node yet (a ``temporal_fusion`` parameter needs the camera motion there, from tf or odometry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import invert_transform, transform_points


@dataclass(frozen=True)
class FusionOptions:
    """Settings of :class:`TemporalFusion`.

    Attributes:
        max_disagreement: a pixel whose prediction and warped estimate differ by more than this many combined
            sigmas restarts from the prediction.
        process_noise: relative sigma added (in quadrature, times depth) to the warped estimate per frame.
        max_gap: seconds; a longer gap between two frames resets the state.
    """

    max_disagreement: float = 3.0
    process_noise: float = 0.02
    max_gap: float = 0.5

    def __post_init__(self):
        for name in ("max_disagreement", "max_gap"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.process_noise >= 0:
            raise ValueError(f"process_noise must be >= 0, got {self.process_noise}")


def forward_warp(depth: np.ndarray, sigma: np.ndarray, camera: PinholeCamera,
                 current_from_previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Previous depth and sigma seen from the current camera (same intrinsics), nearest pixel, z-buffered.

    Args:
        depth: (H, W) float32 previous depth in metres (NaN invalid), previous optical frame.
        sigma: (H, W) its sigma in metres.
        camera: intrinsics of both frames at (H, W).
        current_from_previous: 4x4 ``T_current_previous`` (maps previous-camera points into the current camera).

    Returns:
        (depth, sigma) (H, W) float32 in the current frame, NaN where nothing landed; sigma scaled with the depth
        change of its point (relative sigma kept).
    """
    height, width = depth.shape
    points = transform_points(current_from_previous, camera.backproject(depth).reshape(-1, 3))
    uv, z = camera.project(points)
    u, v = np.round(uv[:, 0]), np.round(uv[:, 1])
    ok = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u < width) & (v >= 0) & (v < height) & (z > 0)
    old = depth.reshape(-1)
    ok &= np.isfinite(old) & np.isfinite(sigma.reshape(-1))
    index = (v[ok] * width + u[ok]).astype(np.int64)
    new_z, new_sigma = z[ok], sigma.reshape(-1)[ok] * z[ok] / old[ok]
    order = np.argsort(-new_z, kind="stable")  # farthest first: the nearest point is written last and wins
    warped = np.full(height * width, np.nan, np.float32)
    warped_sigma = np.full(height * width, np.nan, np.float32)
    warped[index[order]] = new_z[order]
    warped_sigma[index[order]] = new_sigma[order]
    return warped.reshape(height, width), warped_sigma.reshape(height, width)


@dataclass
class _State:
    depth: np.ndarray
    sigma: np.ndarray
    camera: PinholeCamera
    stamp_ns: int
    world_from_camera: np.ndarray
    model: str


class TemporalFusion:
    """Fuses each new (depth, sigma) with the motion-compensated previous fused estimate (see the module text).

    Attributes:
        last_reset: why the state restarted at the last :meth:`update` (``""`` when it fused).
    """

    def __init__(self, options: FusionOptions | None = None):
        self.options = options or FusionOptions()
        self._state: _State | None = None
        self.last_reset = ""

    def reset(self) -> None:
        """Forget the state; the next frame starts from its prediction."""
        self._state = None

    def _reset_reason(self, camera: PinholeCamera, stamp_ns: int, pose, model: str) -> str:
        state = self._state
        if pose is None:
            return "no camera pose"
        if state is None:
            return "first frame"
        if model != state.model:
            return "model changed"
        if camera != state.camera:
            return "camera changed"
        if stamp_ns <= state.stamp_ns:
            return "stamp not after the previous one (clock jump)"
        if (stamp_ns - state.stamp_ns) / 1e9 > self.options.max_gap:
            return f"gap of {(stamp_ns - state.stamp_ns) / 1e9:.3f} s > max_gap"
        return ""

    def update(self, depth: np.ndarray, sigma: np.ndarray, camera: PinholeCamera, stamp_ns: int,
               world_from_camera: np.ndarray | None, model: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Fuse one frame.

        Args:
            depth: (H, W) float32 predicted depth in metres, NaN invalid.
            sigma: (H, W) float32 its sigma in metres (NaN: the pixel is not fused).
            camera: intrinsics at (H, W).
            stamp_ns: the frame's stamp in nanoseconds.
            world_from_camera: 4x4 ``T_world_camera`` (camera optical frame to a fixed frame, e.g. odom), or None
                when unknown (resets).
            model: an id of the model that predicted (a change resets).

        Returns:
            (fused depth, fused sigma), (H, W) float32 metres; the prediction itself where the pixel or the state
            restarted.
        """
        self.last_reset = self._reset_reason(camera, stamp_ns, world_from_camera, model)
        fused, fused_sigma = depth.astype(np.float32), sigma.astype(np.float32)
        if not self.last_reset:
            state = self._state
            motion = invert_transform(world_from_camera) @ state.world_from_camera
            warped, warped_sigma = forward_warp(state.depth, state.sigma, camera, motion)
            warped_sigma = np.sqrt(warped_sigma**2 + (self.options.process_noise * warped) ** 2)
            with np.errstate(invalid="ignore"):
                combined = np.sqrt(sigma**2 + warped_sigma**2)
                agree = np.abs(depth - warped) <= self.options.max_disagreement * combined
            weight = 1.0 / np.where(agree, sigma, 1.0) ** 2
            warped_weight = 1.0 / np.where(agree, warped_sigma, 1.0) ** 2
            total = weight + warped_weight
            fused = np.where(agree, (depth * weight + warped * warped_weight) / total, depth).astype(np.float32)
            fused_sigma = np.where(agree, 1.0 / np.sqrt(total), sigma).astype(np.float32)
        if world_from_camera is None:
            self._state = None
        else:
            self._state = _State(fused, fused_sigma, camera, stamp_ns, np.asarray(world_from_camera, float), model)
        return fused, fused_sigma
