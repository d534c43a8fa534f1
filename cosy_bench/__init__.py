"""cosy_bench: a benchmark suite for textual explanations of neurons, built on CoSy."""

__version__ = "0.1.0"
