"""The units a run evaluates (the ``units`` config group): the layer's neurons
(:class:`~cosy_bench.units.kinds.Neurons`, the default) or the latents of a sparse dictionary
applied to them (:class:`~cosy_bench.units.kinds.SaeUnits`: loaded from a file or trained on
the control set's activations), and the probe-set truth rule that compares both
(:mod:`cosy_bench.units.truth`). See docs/units.md."""
