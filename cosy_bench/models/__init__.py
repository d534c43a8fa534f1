"""Models as registered configs (``conf/model/*.yaml``) and one path to build them all
(:func:`create_model`): loaders, preprocessing, class names, layer extraction, CLIP
loading. May import ``cache``; the toy CNN comes from ``toyworld`` by config."""

from cosy_bench.models.factory import ModelBundle, create_model, resolve_layer

__all__ = ["ModelBundle", "create_model", "resolve_layer"]
