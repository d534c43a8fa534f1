"""Control and probe datasets: folders of images, ImageNet/Places365 layouts, the Broden
probe set (:mod:`.broden`, segmentations for NetDissect and CompExp) and a
synthetic control set for smoke runs. Imports nothing else of cosy_bench."""

from cosy_bench.data.datasets import ImageFolder, SyntheticControlSet

__all__ = ["ImageFolder", "SyntheticControlSet"]
