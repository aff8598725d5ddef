"""MONAI Label tasks beyond what the ``monaibundle`` app builds from a bundle by itself (it needs the optional
``monailabel`` package: see docs/guide.md, "MONAI Label").

- :class:`PromptPropagationInferTask`: the SAM2LoRA bundle's point / box prompt mode as an interactive task, with
  the mask carried to the neighbouring slices in both directions.
"""

from .prompt_propagation_task import PromptPropagationInferTask

__all__ = ["PromptPropagationInferTask"]
