"""tfx_transfer: transfer learning for computer vision with Keras 3, as a decision backed by evidence.

Example:
    >>> import tfx_transfer
    >>> model = tfx_transfer.load_backbone("mobilenet_v2", weights=None, image_size=64)
    >>> tfx_transfer.unfreeze_top_blocks(model, 2)
    ['block_16', 'top']
"""

from tfx_transfer.backbones import BACKBONES, BackboneSpec, ImagePreprocessing, get_backbone_spec, list_backbones
from tfx_transfer.model import (
    audit_frozen_weights,
    find_backbone,
    format_trainable_summary,
    freeze_backbone,
    load_backbone,
    snapshot_frozen_weights,
    trainable_summary,
    unfreeze_fraction,
    unfreeze_from_block,
    unfreeze_top_blocks,
    weights_info,
)
from tfx_transfer.weights import WeightsInfo, available_weights, import_weights

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "ImagePreprocessing",
    "WeightsInfo",
    "audit_frozen_weights",
    "available_weights",
    "find_backbone",
    "format_trainable_summary",
    "freeze_backbone",
    "get_backbone_spec",
    "import_weights",
    "list_backbones",
    "load_backbone",
    "snapshot_frozen_weights",
    "trainable_summary",
    "unfreeze_fraction",
    "unfreeze_from_block",
    "unfreeze_top_blocks",
    "weights_info",
]
