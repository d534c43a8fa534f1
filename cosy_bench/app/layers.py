"""``layer=NAME`` for any layer a model's yaml declares, with no ``conf/layer/NAME.yaml``.

A model yaml lists its layers (``layers: {stage4: {module: features.7}}``); a new
architecture is that one file. :class:`LayerConfigSource` answers every ``layer/<NAME>``
that no file provides with ``{name: NAME}``; the model then resolves the name to its module
(or, for a name it does not declare, to a module path of the network, else an error
listing its layers: ``cosy_bench.models.factory.resolve_layer``). Sweeps work as for any
group: ``-m layer=stage2,stage4``.

:class:`LayerSearchPath` appends the source to the search path of cosy_bench's own app
only (a search path that holds cosy_bench's ``conf/``), after every folder, so real files
win. Hydra finds both classes through ``hydra_plugins/cosy_bench_plugins``.
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

SCHEME = "cosy-layers"
GROUP = "layer"


def _layer_name(config_path: str) -> str | None:
    """``layer/stage4(.yaml)`` -> ``stage4``; None for anything else."""
    path = config_path.strip("/")
    if path.endswith(".yaml"):
        path = path[: -len(".yaml")]
    group, sep, name = path.partition("/")
    return name if group == GROUP and sep and name else None


class LayerConfigSource(ConfigSource):
    """The ``layer`` group's fallback: ``layer/NAME`` is ``{name: NAME}``."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        name = _layer_name(config_path)
        if name is None:
            raise ConfigLoadError(f"{SCHEME}:// holds only layer/<name>, not {config_path!r}")
        return ConfigResult(config=OmegaConf.create({"name": name}), path=self.full_path(),
                            provider=self.provider, header={"package": None})

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        return _layer_name(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path.strip("/") == "" and results_filter in (None, ObjectType.GROUP):
            return [GROUP]
        return []  # the names depend on the model: listed by its yaml, not here


def _is_cosy_conf(entry_path: str | None) -> bool:
    if not entry_path:
        return False
    if entry_path == "pkg://cosy_bench.conf":
        return True
    if "://" in entry_path and not entry_path.startswith("file://"):
        return False
    from cosy_bench.app.config import config_dir

    try:
        ours = config_dir()
    except FileNotFoundError:
        return False
    return os.path.realpath(entry_path.removeprefix("file://")) == os.path.realpath(ours)


class LayerSearchPath(SearchPathPlugin):
    """Adds :class:`LayerConfigSource` to the search path of cosy_bench's app."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        entries = search_path.get_path()
        if any(e.path == f"{SCHEME}://" for e in entries):
            return
        if any(_is_cosy_conf(e.path) for e in entries):
            search_path.append(provider="cosy_bench", path=f"{SCHEME}://")
