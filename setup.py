"""Package list for setuptools (the rest of the metadata is in pyproject.toml): cosy_bench's
packages, its Hydra configs ``conf/`` as ``cosy_bench.conf`` and its Hydra plugin."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["cosy_bench", "cosy_bench.*"]), "cosy_bench.conf",
                "hydra_plugins.cosy_bench_plugins"])
