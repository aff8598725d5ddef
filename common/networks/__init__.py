from .sam_segmentation_net import SamSegmentationNet

__all__ = ["SamSegmentationNet"]
