"""The Hydra app: ``python -m cosy_bench`` and the ``cosy-bench`` console script."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from cosy_bench.app.config import config_dir
from cosy_bench.app.failures import UserInputError, record_failure
from cosy_bench.app.inputs import check_inputs
from cosy_bench.app.logs import announce_results, quiet
from cosy_bench.app.yaml_errors import install as explain_yaml_errors
from hydra_plugins.cosy_bench_plugins import register

quiet()
explain_yaml_errors()  # a YAML syntax error in a config: file, line, column, the line
register()  # layer=NAME and the sweeper, also where Hydra's plugin scan misses them

CONFIG_DIR = str(config_dir())  # conf/ of the checkout, or cosy_bench/conf of a wheel


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from cosy_bench.distributed.session import session
    from cosy_bench.loggers import sweep_group
    from cosy_bench.record import RunRecord
    from cosy_bench.schema import ConfigError, validate

    quiet()  # again in the job's process: submitit unpickles main without importing this module
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    try:
        try:
            validate(cfg)  # the typed config (cosy_bench/schema.py), before any work
        except ConfigError as err:  # the message says the fix: no traceback on the console
            raise UserInputError(str(err)) from err
        # every missing or wrong input (weights, IMAGENET_VAL_DIR, the layer, neurons.ids,
        # the control set's size...) in one message, before any model is built
        check_inputs(cfg)
        logger = instantiate(cfg.logger)  # now: logger=auto says at start whether it logs
        # trainer=ddp/ddp_cpu: start or join the other ranks; each runs the whole task
        with session(cfg.trainer, output_dir) as ranks:
            result = instantiate(cfg.task)(cfg, output_dir)
    except Exception as exc:  # error.txt and run.log of this job say what went wrong
        record_failure(output_dir, exc)
        raise
    if not isinstance(result, RunRecord) or not ranks.is_rank_zero:
        return None
    group = sweep_group(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    logger.log_run(cfg, result, output_dir, group=group)
    announce_results(result.table(), output_dir)  # the last line: where the results are
    auc = result.summary.get("auc")
    return auc["mean"] if isinstance(auc, dict) else None


if __name__ == "__main__":
    main()
