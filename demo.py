"""`python demo.py PHOTO` (from a checkout): `lightnets demo`, the photo classified or segmented.

    python demo.py photo.jpg                       # MobileNetV2, torchvision's ImageNet weights
    python demo.py photo.jpg --model efficientnet_lite0 --top 3
    python demo.py photo.jpg --weights model.h5     # a file made by `lightnets convert`
"""

import sys

from keras_lightnets.cli.demo import main

if __name__ == "__main__":
    sys.exit(main(prog="python demo.py"))
