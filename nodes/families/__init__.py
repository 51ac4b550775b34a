"""Pretrained model families (SD 1.x/2.x, SDXL, SD3, Flux) as nodes, on diffusers' model classes.

Each family is a `ModelFamily` registered as the component ("family", name): how to recognise its
pipeline folder, which class wraps its denoiser as our `Backbone` (t = 0 noise, t = 1 data, the
output converted to one of our prediction kinds), and how its text encoders make a `Condition`.
Loading is offline and safetensors-only (see `loading`). Plugins add families the same way.
"""
