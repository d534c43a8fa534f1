"""How the toy world's shipped weights were made: the toy CNN (:mod:`.cnn`), the toy CLIP
(:mod:`.clip`, with its captions :mod:`.captions`), the toy MILAN decoder (:mod:`.milan`) and
their evaluation (:mod:`.evaluate`). Nothing at run time imports this package; it may import
the runtime world, the explainers and the record."""
