"""Models as registered configs (``conf/model/*.yaml``) and one path to build them all."""

from cosy_bench.models.factory import ModelBundle, create_model, resolve_layer

__all__ = ["ModelBundle", "create_model", "resolve_layer"]
