"""Lightning predict loops, sharded across DDP ranks without padding: activations of a layer
(:mod:`.activations`), synthesis of images (:mod:`.synthesis`), and units' top-k exemplars
with quantile levels (:mod:`.exemplars`). May import ``distributed``, ``cache``, ``data``,
``generators`` and ``models``."""
