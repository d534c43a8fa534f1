"""cosy_bench's Hydra plugins (Hydra scans ``hydra_plugins.*`` for plugin classes):

- ``layer=NAME`` for any layer a model yaml declares (``cosy_bench/app/layers.py``);
- :class:`ListingSweeper` (``hydra.sweeper`` in ``conf/hydra/default.yaml``): every job of a
  sweep runs, the failed ones are listed at the end (``cosy_bench/app/failures.py``).
  Hydra instantiates plugins only from ``hydra_plugins``, hence the subclass here.
"""

from cosy_bench.app.failures import FailureListingSweeper
from cosy_bench.app.layers import LayerConfigSource, LayerSearchPath


class ListingSweeper(FailureListingSweeper):
    """See :class:`cosy_bench.app.failures.FailureListingSweeper`."""


__all__ = ["LayerConfigSource", "LayerSearchPath", "ListingSweeper", "register"]


def register() -> None:
    """Register the plugins by hand (idempotent): Hydra's scan of ``hydra_plugins`` does not
    see packages that a setuptools editable install maps through its import hook."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    for clazz in (LayerConfigSource, LayerSearchPath, ListingSweeper):
        plugins.register(clazz)
    register_resolvers()


def register_resolvers() -> None:
    """``${cosy_short:${hydra.job.override_dirname}}``: sweep job folders named by short
    overrides (paths as base name + hash; :func:`cosy_bench.cache.fingerprint.short_overrides`)."""
    from omegaconf import OmegaConf

    from cosy_bench.cache.fingerprint import short_overrides

    if not OmegaConf.has_resolver("cosy_short"):
        OmegaConf.register_new_resolver("cosy_short", short_overrides)


register_resolvers()
