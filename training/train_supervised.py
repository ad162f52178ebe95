#!/usr/bin/env python3
"""Supervised metric fine-tuning of Depth Anything V2 with Accelerate; the code is :mod:`depth_ros.supervised`.

    python training/train_supervised.py --config config/train_7scenes.yaml [--resume] [--stop-after-steps N]
    accelerate launch training/train_supervised.py --config ...      # several GPUs, fp16/bf16 from the config
"""

import sys

from depth_ros.supervised import main

if __name__ == "__main__":
    sys.exit(main())
