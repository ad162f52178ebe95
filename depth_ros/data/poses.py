"""Camera trajectories: the pose of the camera's optical frame at image stamps, from a bag or a TUM folder.

Every source gives ``T_fixed_camera(t)``, the pose of the camera optical frame (REP 103: x right, y down, z forward)
in a fixed frame (``odom``, ``map``, ``world``; REP 105). It maps camera-frame points into the fixed frame
(camera-to-world), the convention of :mod:`depth_ros.geometry.transform` (``T_a_b`` maps b into a) and of TUM's
``groundtruth.txt``. Sources (:class:`PoseSource` ``kind``):

- ``odometry``: a nav_msgs/Odometry topic (pose of ``child_frame_id``, the base, in ``header.frame_id``, REP 105)
  times the camera extrinsic ``T_base_camera``;
- ``pose``: a geometry_msgs/PoseStamped or PoseWithCovarianceStamped topic (pose of the camera, or of
  ``base_frame``, in ``header.frame_id``), times the extrinsic when it is a base pose;
- ``tf``: the TF tree of ``/tf`` (moving edges, interpolated at the stamps) and ``/tf_static`` (fixed edges),
  composed along the tree path from ``fixed_frame`` to the camera frame, as tf2's ``lookup_transform(fixed, camera,
  t)`` would (but interpolating each moving edge at t instead of requiring a common time);
- ``tum``: a TUM ``groundtruth.txt`` (camera optical frame to world) of a folder.

The extrinsic ``T_base_camera`` comes from the bag's ``/tf_static`` (chains of static transforms, e.g. base_link ->
camera_link -> camera_optical_frame, are composed), else from the ``camera_to_base`` parameter
``[x, y, z, roll, pitch, yaw]`` (as depth_node's parameter of that name). Moving edges are :class:`PoseTrajectory`
(linear + Slerp interpolation, ``tolerance`` beyond the ends, no pose across gaps longer than ``max_gap``); a stamp
without a pose raises :class:`~depth_ros.geometry.transform.PoseLookupError` naming the stamp.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_ros.data.rosbag import BagReader
from depth_ros.geometry.tf_tree import TransformChain, chain_transform, frame_name, tf_edges, tree_path
from depth_ros.geometry.transform import (
    PoseTrajectory,
    pose_matrix,
    pose_msg_to_matrix,
)
from depth_ros.ros.conversions import stamp_ns

log = logging.getLogger(__name__)

KINDS = ("odometry", "pose", "tf", "tum")
DEFAULT_TOPICS = {"odometry": "/odom", "tf": "/tf"}
TF_STATIC_TOPIC = "/tf_static"
TUM_FILE = "groundtruth.txt"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped")
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


@dataclass(frozen=True)
class PoseSource:
    """Where the camera poses come from (see the module docstring for the kinds).

    Attributes:
        kind: ``odometry``, ``pose``, ``tf`` or ``tum``.
        topic: the odometry / pose topic, or the TF topic; default ``/odom`` for odometry, ``/tf`` for tf; required
            for pose; unused for tum.
        fixed_frame: the frame the poses are in. Required for tf (e.g. ``odom``); for odometry and pose, when
            given, the messages' ``header.frame_id`` must be it; for tum, the name given to the TUM file's world.
        camera_frame: the camera optical frame; None: the frame passed to :func:`load_camera_trajectory` (the
            images' ``header.frame_id``).
        base_frame: pose kind only: the frame whose pose the messages give (PoseStamped has no child frame); None:
            the messages are camera poses, or base poses when ``camera_to_base`` is given.
        camera_to_base: ``[x, y, z, roll, pitch, yaw]`` (m, rad; :func:`~depth_ros.geometry.transform.pose_matrix`)
            pose of the camera optical frame in the base frame, ``T_base_camera``; used only when the bag's
            ``/tf_static`` has no transform chain from the base to the camera.
        tolerance: seconds a stamp may lie beyond the first / last pose of a moving edge.
        max_gap: longest interval in seconds between two poses that is interpolated across (None: any).

    Raises:
        ValueError: an unknown kind, a pose source without topic, a tf source without fixed frame, a camera_to_base
            that is not 6 finite numbers, or a negative tolerance.
    """

    kind: str = "odometry"
    topic: str | None = None
    fixed_frame: str | None = None
    camera_frame: str | None = None
    base_frame: str | None = None
    camera_to_base: Sequence[float] | None = None
    tolerance: float = 0.02
    max_gap: float | None = 0.5

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"pose source kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.kind == "pose" and not self.topic:
            raise ValueError("pose source 'pose': give the PoseStamped / PoseWithCovarianceStamped topic")
        if self.kind == "tf" and not self.fixed_frame:
            raise ValueError("pose source 'tf': give the fixed frame (e.g. odom) the camera poses are in")
        if self.camera_to_base is not None:
            pose_matrix(self.camera_to_base)
        if not self.tolerance >= 0:
            raise ValueError(f"pose source tolerance must be >= 0 s, got {self.tolerance}")


def load_camera_trajectory(path: str | Path, source: PoseSource,
                           camera_frame: str | None = None) -> PoseTrajectory | TransformChain:
    """The trajectory ``T_fixed_camera(t)`` of the camera optical frame (camera-to-world) from ``source``.

    Args:
        path: the bag (odometry, pose, tf), or for tum the folder holding ``groundtruth.txt`` (or that file).
        source: which poses (see :class:`PoseSource`).
        camera_frame: the camera optical frame when ``source.camera_frame`` is None, typically the images'
            ``header.frame_id``.

    Returns:
        A :class:`PoseTrajectory` (odometry, pose, tum; the extrinsic applied after interpolation, see
        :meth:`PoseTrajectory.attached`) or a :class:`TransformChain` (tf). Both give poses with ``at(stamps)``
        ((M,) s -> (M, 4, 4) float64 ``T_fixed_camera``, raising PoseLookupError naming a stamp without pose) and
        ``covers(stamps)``; ``parent`` is the fixed frame, ``child`` the camera frame.

    Raises:
        FileNotFoundError: no such bag or TUM file.
        BagError: an unreadable bag.
        ValueError: no camera frame named; a missing topic or one of the wrong type (lists the bag's topics); no
            message; another fixed frame than ``source.fixed_frame``; no extrinsic (no static chain from the base to
            the camera and no ``camera_to_base``); no TF path from the fixed frame to the camera; a TF frame with two
            parents; a malformed TUM line.
    """
    path = Path(path)
    camera = frame_name(source.camera_frame or camera_frame or "")
    if source.kind == "tum":
        return PoseTrajectory.from_tum_file(path / TUM_FILE if path.is_dir() else path,
                                            parent=source.fixed_frame or "world",
                                            child=camera or "camera_optical_frame", tolerance=source.tolerance,
                                            max_gap=source.max_gap)
    if not camera:
        raise ValueError(f"{path}: name the camera frame (PoseSource.camera_frame, or the images' frame_id)")
    with BagReader(path) as bag:
        static = _static_edges(bag)
        if source.kind == "tf":
            return _tf_chain(bag, source, static, camera)
        trajectory, body = _body_trajectory(bag, source)
        extrinsic = _extrinsic(bag, source, static, body, camera)
    return trajectory.attached(extrinsic, camera)


def _trajectory(samples: dict[int, np.ndarray], parent: str, child: str, source: PoseSource) -> PoseTrajectory:
    """A PoseTrajectory from ``{header stamp ns: T_parent_child}`` (a repeated stamp keeps its last pose)."""
    stamps = sorted(samples)
    return PoseTrajectory(np.array(stamps) * 1e-9, np.array([samples[s] for s in stamps]), parent=parent,
                          child=child, tolerance=source.tolerance, max_gap=source.max_gap)


def _body_trajectory(bag: BagReader, source: PoseSource) -> tuple[PoseTrajectory, str | None]:
    """The odometry / pose topic as ``T_fixed_body(t)``, and the body frame (None: a pose topic of the camera)."""
    topic = source.topic or DEFAULT_TOPICS[source.kind]
    types = (ODOMETRY,) if source.kind == "odometry" else POSE_TYPES
    samples, fixed, body = {}, None, frame_name(source.base_frame) if source.base_frame else None
    for _, _, msg in bag.topic_messages(topic, types):
        fixed = fixed or frame_name(msg.header.frame_id)
        if source.kind == "odometry":
            body = body or frame_name(msg.child_frame_id)
        samples[stamp_ns(msg.header)] = pose_msg_to_matrix(msg)
    if not samples:
        raise ValueError(f"{bag.path}: {topic} has no message")
    if source.fixed_frame and frame_name(source.fixed_frame) != fixed:
        raise ValueError(f"{bag.path}: {topic} gives poses in '{fixed}', not in the fixed frame "
                         f"'{source.fixed_frame}'")
    return _trajectory(samples, fixed or "world", body or "camera", source), body


def _static_edges(bag: BagReader) -> dict[str, tuple[str, np.ndarray]]:
    """child frame -> (parent frame, ``T_parent_child``) of every transform on ``/tf_static`` (none without it)."""
    if not bag.has_topic(TF_STATIC_TOPIC):
        return {}
    return tf_edges(msg for _, _, msg in bag.topic_messages(TF_STATIC_TOPIC, (TF_MESSAGE,)))


def _listing(edges: dict[str, tuple[str, object]]) -> str:
    return ", ".join(f"{parent} -> {child}" for child, (parent, _) in edges.items()) or "none"


def _extrinsic(bag: BagReader, source: PoseSource, static: dict[str, tuple[str, np.ndarray]], body: str | None,
               camera: str) -> np.ndarray:
    """``T_body_camera``: identity for a camera pose; else the static chain body -> camera of the bag, else
    ``camera_to_base``."""
    given = None if source.camera_to_base is None else pose_matrix(source.camera_to_base)
    if body is None:
        return np.eye(4) if given is None else given
    matrix = chain_transform(static, body, camera)
    if matrix is not None:
        if given is not None and body != camera:
            log.warning("%s: using the static transform %s -> %s of %s; camera_to_base is ignored", bag.path, body,
                        camera, TF_STATIC_TOPIC)
        return matrix
    if given is not None:
        return given
    raise ValueError(f"{bag.path}: no static transform chain {body} -> {camera} on {TF_STATIC_TOPIC} (static "
                     f"transforms: {_listing(static)}); give camera_to_base [x, y, z, roll, pitch, yaw]")


def _tf_chain(bag: BagReader, source: PoseSource, static: dict[str, tuple[str, np.ndarray]],
              camera: str) -> TransformChain:
    """The TF tree of the bag as a chain fixed frame -> camera (moving edges from the TF topic, static ones from
    ``/tf_static``)."""
    topic = source.topic or DEFAULT_TOPICS["tf"]
    moving: dict[str, tuple[str, dict[int, np.ndarray]]] = {}
    for _, _, msg in bag.topic_messages(topic, (TF_MESSAGE,)):
        for transform in msg.transforms:
            parent, child = frame_name(transform.header.frame_id), frame_name(transform.child_frame_id)
            known = moving.get(child, static.get(child, (parent,)))[0]
            if known != parent:
                raise ValueError(f"{bag.path}: TF frame '{child}' has two parents, '{known}' and '{parent}'")
            moving.setdefault(child, (parent, {}))[1][stamp_ns(transform.header)] = pose_msg_to_matrix(transform)
    edges = {**static, **{child: (parent, _trajectory(samples, parent, child, source))
                          for child, (parent, samples) in moving.items()}}
    fixed = frame_name(source.fixed_frame)
    path = tree_path({child: parent for child, (parent, _) in edges.items()}, fixed, camera)
    if path is None:
        raise ValueError(f"{bag.path}: no TF path from '{fixed}' to '{camera}' on {topic} and {TF_STATIC_TOPIC} "
                         f"(transforms: {_listing(edges)})")
    return TransformChain([(edges[child][1], inverted) for child, inverted in path], fixed, camera)
