"""Studies made of several pipeline runs (``experiment=...`` configs with their own task).
A top-layer package: may import the pipeline and anything below it."""
