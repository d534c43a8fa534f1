"""Studies made of several pipeline runs (``experiment=...`` configs with their own task)."""
