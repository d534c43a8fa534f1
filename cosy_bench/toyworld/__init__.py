"""The toy world: an offline procedural concept world with ground-truth neurons.

Modules: ``vocab`` (concepts, classes, prompt parsing), ``render`` (numpy scene renderer
with concept masks), ``generator`` (``ToyWorldGenerator``, the text-to-image stand-in),
``data`` (control and probe sets), ``model`` (``ToyCNN`` and ``load_toy_cnn``), ``train`` /
``evaluate`` (training and checks of the shipped toy CNN), ``gallery`` (a picture of prompts).
"""
