"""The toy world: an offline procedural concept world with ground-truth neurons.

Runtime: ``vocab`` (concepts, classes, prompt parsing), ``scenes`` (scene specs, sampling,
captions), ``render`` (numpy renderer with concept masks), ``generator`` (the text-to-image
stand-in), ``data`` (control and probe sets), ``model`` (the toy CNN), ``clip`` (the toy
CLIP), ``gallery`` (a picture of prompts). May import ``cache``, ``generators`` and
``models``. How the shipped weights were trained is :mod:`.training` (not imported at run
time).
"""
