"""Benchmark commands: measurements that are too slow or too hardware-dependent for the test suite.

- ``python -m common.benchmark`` (``sam-peft-efficiency``): the efficiency table of the four methods against full
  fine-tuning and the frozen base model, see :mod:`common.benchmark.efficiency`.
- ``python -m common.benchmark.accuracy`` (``sam-peft-accuracy``): train a method on a real dataset under a budget
  (optionally on a seeded subset of labelled cases) and test it, the same way for every method.
- ``python -m common.benchmark.label_efficiency``: the table and figure of test Dice against labelled volumes.
- ``python -m common.benchmark.cross_camera`` and ``python -m common.benchmark.whole_brain``: a shipped adapter on
  another camera's fundus pictures, and on a whole-brain T1 against FreeSurfer.

One-question experiments, whose answers are written in the docs, live apart in :mod:`common.benchmark.experiments`.
"""
