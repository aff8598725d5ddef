"""The SAM2LoRA bundle's point / box prompt mode as an interactive MONAI Label task (clicks → points, ROI → box)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.transform.writer import Writer

from common.data import InputError, LabelForMonaiLabeld, LoadScand
from common.data.intensity import ScaleScanIntensityd
from common.engines.prompt_propagation import propagate_from_prompts
from common.segment import load_bundle_for_inference

__all__ = ["PromptPropagationInferTask"]


class PromptPropagationInferTask(InferTask):
    """Segment one structure from clicks or a box on one slice of a volume (or on a 2D image), carried to the
    neighbouring slices in both directions (:func:`common.engines.prompt_propagation.propagate_from_prompts`).

    Register it in a MONAI Label app's ``init_infers`` (see docs/guide.md, "MONAI Label"), e.g.
    ``infers["sam2lora_prompts"] =
    PromptPropagationInferTask(os.path.join(self.model_dir, "sam2lora_fundus_segmentation"))``.

    Requests follow MONAI Label's interactive conventions (3D Slicer, OHIF): ``foreground`` / ``background`` are
    clicks ``[i, j, k]`` in the image's voxel indices (``[i, j]`` for 2D images), ``roi`` is ``[i0, j0, i1, j1]``
    (optionally ``k0, k1``) and the slice is the one clicked on (or ``slice``, or the ROI's middle). Options:
    ``propagate`` (default true), ``max_distance`` (slices each way, 0 = no limit). A study of another kind than the
    bundle's adapter was trained for (``accepted_input``: a volume given to the fundus vessel adapter), a request
    without a foreground click or a box, a click or box outside the study and a malformed prompt are refused with one
    line, which MONAI Label answers as HTTP 422 (:class:`common.data.InputError`); a 2D picture's label map comes
    back as a PNG.

    Args:
        bundle_path: the SAM2LoRA bundle (``configs/inference.json`` and ``models/model.pt``).
        conf: the app's configuration (unused keys are ignored).
        weights: adapter checkpoint (default ``<bundle>/models/model.pt``).
        overrides: config overrides of the bundle (``{"backbone": ...}``; ``{"allow_other_inputs": True}`` to prompt
            on another kind of study than the adapter was trained for).
        configs: extra config files of the bundle's ``configs/`` folder (e.g. ``hippocampus_inference.json``).
        label: the name the structure is shown under (default: the bundle's first label name).
    """

    def __init__(
        self,
        bundle_path: str | os.PathLike,
        conf: dict[str, str] | None = None,
        weights: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
        label: str | None = None,
        configs: Sequence[str] = (),
    ) -> None:
        parser, self.network = load_bundle_for_inference(bundle_path, weights, configs, overrides)
        self.device = torch.device(parser.get_parsed_content("device"))
        self.intensity = ScaleScanIntensityd("image", parser.get_parsed_content("intensity"))
        self.slice_axis = 2  # MONAI Label clients send [i, j, k] clicks: slices are along k
        name = label or next(iter(parser.get_parsed_content("label_names").values()))
        accepted = None if parser.get_parsed_content("allow_other_inputs") else parser.get_parsed_content("accepted_input")
        super().__init__(
            type=InferType.DEEPGROW,
            labels={name: 1},
            dimension=(accepted or {}).get("dimension") or 3,
            description="SAM2LoRA prompts (clicks → points, ROI → box) on one slice, propagated both ways",
            config={"propagate": True, "max_distance": 0},
        )
        self.loader = LoadScand("image", accepted_input=accepted, image_only=True)
        self.label_for_monai_label = LabelForMonaiLabeld("pred")
        self.writer = Writer(label="pred", ref_image="image")

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict) -> tuple[str | None, dict]:
        image = self.loader({"image": request["image"]})["image"]
        is_2d = image.ndim == 3
        spatial_shape = tuple(image.shape[1:])
        foreground, background = (_clicks(request, key, spatial_shape) for key in ("foreground", "background"))
        roi = _roi(request, spatial_shape)
        if not foreground and not roi:
            raise InputError("no prompt: click on the structure to segment (foreground) or draw a box (roi) around it")
        volume = self.intensity({"image": image[..., None] if is_2d else image})["image"]
        slice_index = 0 if is_2d else self._slice_index(request, foreground + background, roi, spatial_shape[-1])
        clicks = [p for p in foreground + background if is_2d or len(p) < 3 or int(p[2]) == slice_index]
        coords = [[float(p[1]), float(p[0])] for p in clicks] or None  # [i, j] → (x = j, y = i)
        labels = [1 if p in foreground else 0 for p in clicks] or None
        box = [roi[1], roi[0], roi[3], roi[2]] if len(roi) >= 4 else None
        max_distance = int(_number(request.get("max_distance") or 0, "max_distance", "a number of slices")) or None
        mask = propagate_from_prompts(
            self._network_on_device,
            volume.as_tensor(),
            slice_index,
            coords,
            labels,
            box,
            spatial_axis=self.slice_axis,
            propagate=str(request.get("propagate", True)).lower() not in ("false", "0") and not is_2d,
            max_distance=max_distance,
        )
        slices = [0] if is_2d else torch.nonzero(mask.reshape(-1, mask.shape[-1]).any(0)).flatten().tolist()
        result = {"image": image, "pred": mask, "image_path": request["image"], **_result_options(request)}
        if is_2d:  # W×H labels written as PNG: a JPEG result (the study's format) would alter the label values
            result = self.label_for_monai_label({**result, "pred": mask[..., 0][None]})
        result_file, _ = self.writer({**result, "pred": torch.as_tensor(result["pred"]).numpy()})
        return result_file, {"label_names": self.labels, "slices": slices}

    def _network_on_device(self, image: torch.Tensor, **prompts) -> torch.Tensor:
        prompts = {k: v.to(self.device) for k, v in prompts.items()}
        return self.network(image.to(self.device), **prompts).cpu()

    @staticmethod
    def _slice_index(request: dict, clicks: list, roi: list, depth: int) -> int:
        """The slice prompted: ``slice`` when given (≥ 0), else the first click's, else the 3D ROI's middle."""
        given = _number(-1 if request.get("slice") is None else request["slice"], "slice", "a slice number")
        if given >= 0:
            if given > depth - 1:
                raise InputError(f"slice: {given:g} is outside the study (slices 0..{depth - 1})")
            return int(given)
        clicked = [int(p[2]) for p in clicks if len(p) > 2]
        if clicked:
            return clicked[0]
        if len(roi) == 6:
            return round((roi[4] + roi[5]) / 2)
        raise InputError("no slice to segment: click on a slice, or give 'slice' or a 3D ROI")


def _numbers(value: Any, name: str, what: str, counts: tuple[int, ...]) -> list[float]:
    """``value`` as a list of ``counts`` finite numbers, or the one error that names the prompt."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in counts or not all(map(math.isfinite, numbers)):
        raise InputError(f"{name}: {json.dumps(value)} is not {what}")
    return numbers


def _number(value: Any, name: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{name}: {json.dumps(value)} is not {what}")
    return number


def _parsed(request: dict, name: str) -> Any:
    value = request.get(name)
    if isinstance(value, str):  # a client may send a prompt as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(f"{name}: {value!r} is not JSON") from None
    return value


def _clicks(request: dict, name: str, spatial_shape: tuple[int, ...]) -> list[list[float]]:
    """The request's ``name`` clicks (``[[i, j, k], ...]``, ``[i, j]`` on a 2D picture), each inside the study."""
    value = _parsed(request, name) or []
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{name}: {json.dumps(value)} is not a list of clicks [i, j, k]")
    clicks = [_numbers(p, name, "a list of clicks [i, j, k] (voxel indices)", (2, 3)) for p in value]
    for click in clicks:
        if any(not 0 <= c <= size - 1 for c, size in zip(click, spatial_shape)):
            shape = "×".join(map(str, spatial_shape))
            raise InputError(f"{name}: the click {json.dumps(click)} is outside the study ({shape} voxels)")
    return clicks


def _roi(request: dict, spatial_shape: tuple[int, ...]) -> list[float]:
    """The request's box ``[i0, j0, i1, j1]`` (or with ``k0, k1``), clipped to the study; [] when none is given."""
    value = _parsed(request, "roi")
    if not value:
        return []
    roi = _numbers(value, "roi", "a box [i0, j0, i1, j1] or [i0, j0, i1, j1, k0, k1] (voxel indices)", (4, 6))
    roi = roi[: 2 * len(spatial_shape)]  # a 2D picture has no k0, k1
    low, high = [roi[0], roi[1]] + roi[4:5], [roi[2], roi[3]] + roi[5:6]
    if any(lo > hi or hi < 0 or lo > size - 1 for lo, hi, size in zip(low, high, spatial_shape)):
        shape = "×".join(map(str, spatial_shape))
        raise InputError(f"roi: the box {json.dumps(value)} is empty or outside the study ({shape} voxels)")
    return [min(max(v, 0.0), spatial_shape[axis] - 1.0) for v, axis in zip(roi, (0, 1, 0, 1, 2, 2))]


def _result_options(request: dict) -> dict:
    """The writer's options a client may send (extension, dtype, compression)."""
    keys = ("result_extension", "result_dtype", "result_compress", "result_write_to_file")
    return {k: request[k] for k in keys if k in request}
