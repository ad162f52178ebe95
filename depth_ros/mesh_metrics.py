"""3-D reconstruction metrics between a mesh and a reference mesh: accuracy, completeness, precision, recall, F-score.

Definitions of Atlas (Murez et al., ECCV 2020), also used by NeuralRecon (Sun et al., CVPR 2021) and
TransformerFusion (Bozic et al., NeurIPS 2021): both meshes' vertices are voxel-down-sampled (2 cm), then

- accuracy: mean distance from a predicted point to the nearest reference point (m);
- completeness: mean distance from a reference point to the nearest predicted point (m);
- precision: fraction of predicted points within ``threshold`` (5 cm) of the reference;
- recall: fraction of reference points within ``threshold`` of the prediction;
- F-score: harmonic mean of precision and recall.

Both meshes must be in the same frame (here: the fixed frame of the camera poses).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

THRESHOLD = 0.05  # m
DOWN_SAMPLE = 0.02  # m


def mesh_points(mesh_or_path, down_sample: float | None = DOWN_SAMPLE) -> np.ndarray:
    """(N, 3) float64 vertices of a mesh (an open3d TriangleMesh / PointCloud, or a PLY / OBJ file), voxel-down-
    sampled to ``down_sample`` metres (None: all).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file open3d cannot read as a mesh, or one without vertices.
    """
    import open3d as o3d

    geometry = mesh_or_path
    if isinstance(mesh_or_path, (str, os.PathLike)):
        path = Path(mesh_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such mesh")
        geometry = o3d.io.read_triangle_mesh(str(path))
    points = np.asarray(geometry.vertices if hasattr(geometry, "vertices") else geometry.points, np.float64)
    if not len(points):
        raise ValueError(f"{mesh_or_path}: no vertices (an empty or unreadable mesh)")
    if down_sample:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        points = np.asarray(cloud.voxel_down_sample(down_sample).points)
    return points


def nearest_distances(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) distance in metres from each of ``points`` (N, 3) to its nearest neighbour in ``reference`` (M, 3)."""
    from scipy.spatial import cKDTree

    return cKDTree(reference).query(points, workers=-1)[0]


def mesh_metrics(predicted: np.ndarray, reference: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """Atlas' mesh metrics (module docstring) of predicted points against reference points.

    Args:
        predicted: (N, 3) points of the evaluated mesh (:func:`mesh_points`), metres.
        reference: (M, 3) points of the reference mesh, same frame.
        threshold: distance in metres for precision and recall.

    Returns:
        ``accuracy`` and ``completeness`` (m), ``precision``, ``recall`` and ``fscore`` (0..1).
    """
    to_reference = nearest_distances(predicted, reference)
    to_predicted = nearest_distances(reference, predicted)
    precision = float(np.mean(to_reference < threshold))
    recall = float(np.mean(to_predicted < threshold))
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"accuracy": float(to_reference.mean()), "completeness": float(to_predicted.mean()),
            "precision": precision, "recall": recall, "fscore": fscore}


def save_error_figure(path: str | os.PathLike, predicted: np.ndarray, reference: np.ndarray,
                      up: np.ndarray | None = None, threshold: float = THRESHOLD, title: str = "") -> None:
    """Top views of both point sets side by side, each point coloured by its distance to the other set
    (predicted: accuracy errors, reference: completeness errors; 0 to 2 x ``threshold``, clipped).

    Args:
        path: PNG to write.
        predicted: (N, 3) points of the evaluated mesh, metres.
        reference: (M, 3) points of the reference mesh, same frame.
        up: (4, 4) transform into a frame whose +z is up (e.g.
            :func:`depth_ros.reconstruction.levelled_frame`); None: the points' own z is up.
        threshold: the precision / recall distance, metres.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from depth_ros.geometry.transform import transform_points

    views = [(predicted, nearest_distances(predicted, reference), "mesh: distance to reference (accuracy)"),
             (reference, nearest_distances(reference, predicted), "reference: distance to mesh (completeness)")]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.3), dpi=80, sharex=True, sharey=True)
    for ax, (points, error, label) in zip(axes, views, strict=True):
        points = points if up is None else transform_points(up, points)
        order = np.argsort(points[:, 2])  # higher points drawn last, as seen from above
        scatter = ax.scatter(points[order, 0], points[order, 1], c=error[order], s=0.5, cmap="turbo", vmin=0.0,
                             vmax=2 * threshold, rasterized=True)
        ax.set_title(label, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("x [m]")
    axes[0].set_ylabel("y [m]")
    figure.colorbar(scatter, ax=axes, label="distance [m]", shrink=0.85)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(path)
    plt.close(figure)
