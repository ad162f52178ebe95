"""Regenerate the Depth Anything V2 parity fixture from an official checkout (run by hand, never in CI).

Usage::

    git clone https://github.com/DepthAnything/Depth-Anything-V2 /tmp/Depth-Anything-V2
    .venv/bin/python test/tools/make_parity_fixture.py /tmp/Depth-Anything-V2

It builds the official ViT-S models (metric: ``metric_depth/depth_anything_v2``, relative: ``depth_anything_v2``),
fills them with the deterministic weights of ``parity_weights``, runs them on the inputs of ``parity_input`` for every
entry of ``CASES`` and writes, into ``test/data/``:

- ``da2_vits_keys.json``: the official state-dict key names and shapes (metric model; the relative one is the same);
- ``da2_vits_parity.npz``: float32 reference outputs per case (subsampled by the case's stride), plus float64
  checksums of the weights and inputs so that a change of torch's random number generator shows up as such.

The reference code needs neither xformers (it falls back to plain attention) nor torchvision (only used for
preprocessing, stubbed here). The same recipe functions are imported by ``test/test_model.py``.
"""

import argparse
import importlib
import json
import sys
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
KEYS_FILE = DATA_DIR / "da2_vits_keys.json"
FIXTURE_FILE = DATA_DIR / "da2_vits_parity.npz"
WEIGHT_SEED = 2024
VITS_FEATURES, VITS_OUT_CHANNELS = 64, [48, 96, 192, 384]
MAX_DEPTH = 20.0


class Case(NamedTuple):
    """One reference run: head, batch size, input height/width (multiples of 14), output subsampling stride."""

    head: str
    batch: int
    height: int
    width: int
    stride: int

    @property
    def name(self) -> str:
        return f"{self.head}_b{self.batch}_{self.height}x{self.width}_s{self.stride}"

    @property
    def seed(self) -> int:
        return self.batch * 1_000_000 + self.height * 1000 + self.width


# Grids 4x5 and 7x6 (downsampled position embedding, non-square), 37x37 (the pre-training grid: table used as is),
# 38x40 (upsampled position embedding).
CASES = (
    Case("metric", 2, 56, 70, 1),
    Case("metric", 1, 98, 84, 1),
    Case("metric", 1, 518, 518, 7),
    Case("relative", 1, 56, 70, 1),
    Case("relative", 1, 98, 84, 1),
    Case("relative", 1, 532, 560, 7),
)


def parity_weights(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Deterministic pseudo-random weights for a state dict with the given key names and shapes.

    Recipe: one ``torch.Generator`` seeded with ``seed``; for each key in sorted order draw ``randn(shape)`` (float32)
    and scale it: tokens and position embedding (``*_token``, ``pos_embed``) as drawn (std 1, like the patch
    embeddings); 1-D ``*.weight`` / ``*.gamma`` (norm and layer scales) ``1 + 0.1 n``; other 1-D tensors (biases)
    ``0.1 n``; everything else ``n / sqrt(numel / shape[0])`` (unit gain per output channel).
    """
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        n = torch.randn(shape, generator=generator, dtype=torch.float32)
        if name.endswith("_token") or name.endswith("pos_embed"):
            weights[name] = n
        elif len(shape) == 1 and name.endswith((".weight", ".gamma")):
            weights[name] = 1 + 0.1 * n
        elif len(shape) == 1:
            weights[name] = 0.1 * n
        else:
            weights[name] = n * (n.numel() / shape[0]) ** -0.5
    return weights


def parity_input(case: Case) -> torch.Tensor:
    """Standard-normal (B, 3, H, W) float32 input of ``case`` (stands in for an ImageNet-normalised image)."""
    generator = torch.Generator().manual_seed(case.seed)
    return torch.randn((case.batch, 3, case.height, case.width), generator=generator, dtype=torch.float32)


def checksum(tensors) -> float:
    """Sum of absolute values in float64: detects a different random stream, not meant as a hash."""
    return float(sum(t.double().abs().sum() for t in tensors))


def _official_model(checkout: Path, head: str) -> torch.nn.Module:
    """Import the official package for ``head`` from ``checkout`` and build its ViT-S model (random weights)."""
    root = checkout / "metric_depth" if head == "metric" else checkout
    for module in [m for m in sys.modules if m.split(".")[0] == "depth_anything_v2"]:
        del sys.modules[module]  # the two official packages share one name
    sys.path.insert(0, str(root))
    try:
        dpt = importlib.import_module("depth_anything_v2.dpt")
    finally:
        sys.path.remove(str(root))
    kwargs = {"max_depth": MAX_DEPTH} if head == "metric" else {}
    return dpt.DepthAnythingV2(encoder="vits", features=VITS_FEATURES, out_channels=VITS_OUT_CHANNELS, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="path of a Depth-Anything-V2 checkout")
    args = parser.parse_args()
    if "torchvision" not in sys.modules:
        stub = types.ModuleType("torchvision.transforms")
        stub.Compose = None
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.transforms"] = stub

    arrays: dict[str, np.ndarray] = {}
    for head in ("metric", "relative"):
        model = _official_model(args.checkout, head).eval()
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        if head == "metric":
            DATA_DIR.mkdir(exist_ok=True)
            lines = (f"  {json.dumps(name)}: {json.dumps(list(shape))}" for name, shape in shapes.items())
            KEYS_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        weights = parity_weights(shapes)
        model.load_state_dict(weights, strict=True)
        arrays[f"{head}_weights_checksum"] = np.float64(checksum(weights.values()))
        for case in (c for c in CASES if c.head == head):
            x = parity_input(case)
            with torch.no_grad():
                out = model(x)[:, :: case.stride, :: case.stride]
            arrays[f"{case.name}_input_checksum"] = np.float64(checksum([x]))
            arrays[case.name] = out.numpy().astype(np.float32)
    np.savez_compressed(FIXTURE_FILE, **arrays)


if __name__ == "__main__":
    main()
