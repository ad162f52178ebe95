"""The TF tree (REP 105 frames, tf2 conventions): edges of tf2_msgs/TFMessage messages, paths between frames and
transforms composed along them, for fixed edges (matrices) and moving ones (:class:`PoseTrajectory`).

``T_a_b`` maps frame-b points into frame a (tf2's ``lookup_transform(target=a, source=b)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from depth_ros.geometry.transform import (
    PoseLookupError,
    PoseTrajectory,
    invert_transform,
    pose_msg_to_matrix,
    relative_pose,
)


def frame_name(name: str) -> str:
    """A TF frame name without the leading slash of ROS 1 (tf2 frame ids have none)."""
    return str(name).lstrip("/")


def tf_edges(messages) -> dict[str, tuple[str, np.ndarray]]:
    """The TF tree of tf2_msgs/TFMessage messages (rclpy or rosbags): child frame -> (parent frame,
    ``T_parent_child``); a later transform of a child replaces an earlier one. Frame names without a leading '/'."""
    edges = {}
    for msg in messages:
        for transform in msg.transforms:
            edges[frame_name(transform.child_frame_id)] = (frame_name(transform.header.frame_id),
                                                           pose_msg_to_matrix(transform))
    return edges


def chain_transform(edges: dict[str, tuple[str, np.ndarray]], source: str, target: str) -> np.ndarray | None:
    """``T_source_target`` (maps ``target``-frame points into ``source``) composed along the path between the two
    frames in a tree of fixed edges (:func:`tf_edges`); None when they are not connected."""
    path = tree_path({child: parent for child, (parent, _) in edges.items()}, frame_name(source), frame_name(target))
    if path is None:
        return None
    matrix = np.eye(4)
    for child, inverted in path:
        edge = edges[child][1]
        matrix = matrix @ (invert_transform(edge) if inverted else edge)
    return matrix


def tree_path(parents: dict[str, str], source: str, target: str) -> list[tuple[str, bool]] | None:
    """The edges from ``source`` to ``target`` in a tree given as child -> parent: ``(child of the edge, inverted)``
    in the order their transforms multiply into ``T_source_target``; None when the frames are not connected."""
    def ancestors(frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in parents and parents[chain[-1]] not in chain:
            chain.append(parents[chain[-1]])
        return chain

    up, down = ancestors(source), ancestors(target)
    common = next((frame for frame in up if frame in down), None)
    if common is None:
        return None
    return ([(frame, True) for frame in up[:up.index(common)]]
            + [(frame, False) for frame in reversed(down[:down.index(common)])])


class TransformChain:
    """``T_fixed_camera(t)`` composed along a TF tree path: ``F_1(t) @ F_2(t) @ ... @ F_n(t)``.

    Each factor is a static edge (4x4 matrix) or a moving edge (:class:`PoseTrajectory`, interpolated at t), used
    as ``T_parent_child`` when walking down the tree or inverted when walking up. Offers :class:`PoseTrajectory`'s
    reading interface: :meth:`at`, :meth:`covers`, ``parent`` and ``child``.

    Args:
        factors: ``(edge, inverted)`` pairs, edge a (4, 4) float64 matrix or a PoseTrajectory.
        parent: the fixed frame (left end of the chain).
        child: the camera frame (right end).
    """

    def __init__(self, factors: Sequence[tuple[np.ndarray | PoseTrajectory, bool]], parent: str, child: str):
        self.factors = list(factors)
        self.parent, self.child = parent, child

    def __repr__(self) -> str:
        moving = [f.child for f, _ in self.factors if isinstance(f, PoseTrajectory)]
        return f"TransformChain({self.parent} -> {self.child}, {len(self.factors)} edges, moving: {moving})"

    def covers(self, stamps) -> np.ndarray:
        """(M,) bool: the stamps at which every moving edge has a pose."""
        covered = np.ones(np.atleast_1d(stamps).shape, dtype=bool)
        for edge, _ in self.factors:
            if isinstance(edge, PoseTrajectory):
                covered &= edge.covers(stamps)
        return covered

    def at(self, stamps) -> np.ndarray:
        """Poses at ``stamps``: (M,) seconds -> (M, 4, 4) float64 ``T_fixed_camera`` (a scalar stamp gives (4, 4)).

        Raises:
            PoseLookupError: a moving edge has no pose at a stamp (names the chain, the edge and the stamp).
        """
        scalar = np.ndim(stamps) == 0
        stamps = np.atleast_1d(np.asarray(stamps, dtype=np.float64))
        out = np.broadcast_to(np.eye(4), (len(stamps), 4, 4))
        for edge, inverted in self.factors:
            if isinstance(edge, PoseTrajectory):
                try:
                    matrices = edge.at(stamps)
                except PoseLookupError as exc:
                    raise PoseLookupError(f"{self.parent} -> {self.child} (TF chain): {exc}") from None
                matrices = relative_pose(matrices, np.eye(4)) if inverted else matrices
            else:
                matrices = invert_transform(edge) if inverted else edge
            out = out @ matrices
        return out[0] if scalar else out
