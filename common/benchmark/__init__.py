"""Benchmark commands: measurements that are too slow or too hardware-dependent for the test suite.

- ``python -m common.benchmark.s_sam_prompt_options``: what S-SAM's dense-prompt and image-PE options change, on
  cached LiteMedSAM features of real MR slices (decoder side only).
- ``python -m common.benchmark.balr_decoder_ablation``: BALR-SAM's low-rank tensor attention and boundary loss,
  switched on and off, on the same kind of cached features.
"""
