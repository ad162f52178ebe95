#!/usr/bin/env python3
"""Compare a reconstructed mesh with a reference mesh: accuracy, completeness, precision, recall, F-score.

Usage::

    python training/evaluate_mesh.py MESH.ply REFERENCE.ply [--threshold 0.05] [--down-sample 0.02]
                                     [--figure top.png] [--summary out/summary.json] [--json metrics.json]

Metrics of :mod:`depth_ros.mesh_metrics` (Atlas / NeuralRecon / TransformerFusion definitions). ``--figure`` draws
the top views of both meshes, each point coloured by its distance to the other; ``--summary`` (a ``reconstruct``
summary.json) gives the grid frame (``T_grid_fixed``) whose z is up for that view. Prints one JSON line; errors end
in one ``evaluate_mesh: error: ...`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from depth_ros.mesh_metrics import DOWN_SAMPLE, THRESHOLD, mesh_metrics, mesh_points, save_error_figure
from depth_ros.tools.cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate_mesh", description=__doc__.split("\n\n")[0])
    parser.add_argument("mesh", type=Path, help="evaluated mesh (PLY / OBJ)")
    parser.add_argument("reference", type=Path, help="reference mesh, same frame")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="m (default: %(default)s)")
    parser.add_argument("--down-sample", type=float, default=DOWN_SAMPLE, help="voxel m (default: %(default)s)")
    parser.add_argument("--figure", type=Path, help="PNG: top views coloured by error")
    parser.add_argument("--summary", type=Path, help="reconstruct's summary.json: T_grid_fixed for the top view")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--json", type=Path, help="also write the metrics here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        predicted = mesh_points(args.mesh, args.down_sample)
        reference = mesh_points(args.reference, args.down_sample)
        metrics = mesh_metrics(predicted, reference, args.threshold)
        line = json.dumps({"mesh": str(args.mesh), "reference": str(args.reference), **metrics})
        print(line)
        if args.json:
            args.json.write_text(line + "\n")
        if args.figure:
            up = None if args.summary is None else np.array(json.loads(args.summary.read_text())["T_grid_fixed"])
            save_error_figure(args.figure, predicted, reference, up, args.threshold, args.title)

    return run_cli("evaluate_mesh", run)


if __name__ == "__main__":
    sys.exit(main())
