"""Text-to-image generators behind one interface (:mod:`.base`): diffusers pipelines
(:mod:`.diffusers`: SDXL, Stable Cascade, any pipeline, a tiny random one); the toy world's
is :mod:`cosy_bench.toyworld.generator`. Imports only :mod:`cosy_bench.cache.fingerprint` of the rest of cosy_bench (content
keys of local model folders)."""
