#!/usr/bin/env python3
"""Self-supervised metric depth training from images + camera poses (odometry, TF, trajectory), no depth labels;
the code is :mod:`depth_ros.learning`.

    python training/train_self_supervised.py --config config/self_supervised_7scenes.yaml [--resume]
    accelerate launch training/train_self_supervised.py --config ...
"""

import sys

from depth_ros.learning.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], objective="photometric", name="train_self_supervised"))
