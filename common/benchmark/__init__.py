"""Benchmark commands: measurements that are too slow or too hardware-dependent for the test suite.

- ``python -m common.benchmark.s_sam_prompt_options``: what S-SAM's dense-prompt and image-PE options change, on
  cached LiteMedSAM features of real MR slices (decoder side only).
"""
