"""One file per method; importing this package registers every model in the zoo."""

from dynviz.models import efficientnet_lite, lite_cascade, msdnet, resnet_cifar  # noqa: F401
