"""Hydra plugin entry of cosy_bench: ``layer=NAME`` for any layer a model yaml declares (see
``cosy_bench/app/layers.py``). Hydra scans ``hydra_plugins.*`` for plugin classes."""

from cosy_bench.app.layers import LayerConfigSource, LayerSearchPath

__all__ = ["LayerConfigSource", "LayerSearchPath"]
