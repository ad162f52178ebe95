#!/usr/bin/env python3
"""Supervised metric depth training (SiLog on depth labels); the code is :mod:`depth_ros.learning`.

    python training/train_supervised.py --config config/train_7scenes.yaml [--resume] [--stop-after-steps N]
    accelerate launch training/train_supervised.py --config ...      # several GPUs, fp16/bf16 from the config
"""

import sys

from depth_ros.learning.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], objective="silog", name="train_supervised"))
