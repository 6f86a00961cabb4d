"""One file per method; importing this package registers every model in the zoo."""

from dynviz.models import (  # noqa: F401
    adaframe,
    channel_gating,
    condconv,
    dat,
    dcn,
    dvt,
    dynconv,
    efficientnet_lite,
    frame_exit,
    gfnet,
    lite_cascade,
    moe,
    msdnet,
    ranet,
    resnet_cifar,
    skip,
    skip_frames,
    vit,
)
