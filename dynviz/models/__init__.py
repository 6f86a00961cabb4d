"""One file per method; importing this package registers every model in the zoo."""

from dynviz.models import (  # noqa: F401
    channel_gating,
    efficientnet_lite,
    lite_cascade,
    msdnet,
    resnet_cifar,
    skip,
)
