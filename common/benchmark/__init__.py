"""Benchmark commands: measurements that are too slow or too hardware-dependent for the test suite.

- ``python -m common.benchmark``: the efficiency table of the four methods against full fine-tuning and the frozen
  base model (parameters, adapter file size, training-step time and peak memory, inference latency unmerged and
  merged), see :mod:`common.benchmark.efficiency`.
- ``python -m common.benchmark.slice_batching``: volume inference speed, batched slices versus one at a time.
- ``python -m common.benchmark.s_sam_prompt_options``: what S-SAM's dense-prompt and image-PE options change, on
  cached LiteMedSAM features of real MR slices (decoder side only).
- ``python -m common.benchmark.balr_decoder_ablation``: BALR-SAM's low-rank tensor attention and boundary loss,
  switched on and off, on the same kind of cached features.
"""
