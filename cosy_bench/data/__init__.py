"""Control and probe datasets: folders of images and a synthetic control set for smoke runs."""

from cosy_bench.data.datasets import ImageFolder, SyntheticControlSet

__all__ = ["ImageFolder", "SyntheticControlSet"]
