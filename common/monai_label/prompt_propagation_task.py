"""The SAM2LoRA bundle's point / box prompt mode as an interactive MONAI Label task (clicks → points, ROI → box)."""

from __future__ import annotations

import os
from typing import Any

import torch
from monai.transforms import EnsureChannelFirstd, LoadImaged
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.transform.writer import Writer

from common.data.intensity import ScaleScanIntensityd
from common.engines.prompt_propagation import propagate_from_prompts
from common.segment import load_bundle_for_inference

__all__ = ["PromptPropagationInferTask"]


class PromptPropagationInferTask(InferTask):
    """Segment one structure from clicks or a box on one slice of a volume (or on a 2D image), carried to the
    neighbouring slices in both directions (:func:`common.engines.prompt_propagation.propagate_from_prompts`).

    Register it in a MONAI Label app's ``init_infers`` (see the README), e.g.
    ``infers["sam2lora_prompts"] =
    PromptPropagationInferTask(os.path.join(self.model_dir, "sam2lora_fundus_segmentation"))``.

    Requests follow MONAI Label's interactive conventions (3D Slicer, OHIF): ``foreground`` / ``background`` are
    clicks ``[i, j, k]`` in the image's voxel indices (``[i, j]`` for 2D images), ``roi`` is ``[i0, j0, i1, j1]``
    (optionally ``k0, k1``) and the slice is the one clicked on (or ``slice``, or the ROI's middle). Options:
    ``propagate`` (default true), ``max_distance`` (slices each way, 0 = no limit).

    Args:
        bundle_path: the SAM2LoRA bundle (``configs/inference.json`` and ``models/model.pt``).
        conf: the app's configuration (unused keys are ignored).
        weights: adapter checkpoint (default ``<bundle>/models/model.pt``).
        overrides: config overrides of the bundle (``{"backbone": ...}``).
        label: the name the structure is shown under (default: the bundle's first label name).
    """

    def __init__(
        self,
        bundle_path: str | os.PathLike,
        conf: dict[str, str] | None = None,
        weights: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        parser, self.network = load_bundle_for_inference(bundle_path, weights, overrides=overrides)
        self.device = torch.device(parser.get_parsed_content("device"))
        self.intensity = ScaleScanIntensityd("image", parser.get_parsed_content("intensity"))
        self.slice_axis = 2  # MONAI Label clients send [i, j, k] clicks: slices are along k
        name = label or next(iter(parser.get_parsed_content("label_names").values()))
        super().__init__(
            type=InferType.DEEPGROW,
            labels={name: 1},
            dimension=3,
            description="SAM2LoRA prompts (clicks → points, ROI → box) on one slice, propagated both ways",
            config={"propagate": True, "max_distance": 0},
        )
        self.loader = LoadImaged("image", image_only=True)
        self.channel_first = EnsureChannelFirstd("image")
        self.writer = Writer(label="pred", ref_image="image")

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict) -> tuple[str | None, dict]:
        data = self.channel_first(self.loader({"image": request["image"]}))
        image = data["image"]
        is_2d = image.ndim == 3
        volume = self.intensity({"image": image[..., None] if is_2d else image})["image"]
        foreground = [list(p) for p in request.get("foreground", [])]
        background = [list(p) for p in request.get("background", [])]
        roi = list(request.get("roi", []) or [])
        slice_index = 0 if is_2d else self._slice_index(request, foreground + background, roi)
        clicks = [p for p in foreground + background if is_2d or len(p) < 3 or int(p[2]) == slice_index]
        coords = [[float(p[1]), float(p[0])] for p in clicks] or None  # [i, j] → (x = j, y = i)
        labels = [1 if p in foreground else 0 for p in clicks] or None
        box = [roi[1], roi[0], roi[3], roi[2]] if len(roi) >= 4 else None
        max_distance = int(request.get("max_distance", 0) or 0) or None
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
        pred = mask[..., 0] if is_2d else mask
        slices = [0] if is_2d else torch.nonzero(pred.reshape(-1, pred.shape[-1]).any(0)).flatten().tolist()
        result_file, _ = self.writer(
            {"image": image, "pred": pred.numpy(), "image_path": request["image"], **_result_options(request)}
        )
        return result_file, {"label_names": self.labels, "slices": slices}

    def _network_on_device(self, image: torch.Tensor, **prompts) -> torch.Tensor:
        prompts = {k: v.to(self.device) for k, v in prompts.items()}
        return self.network(image.to(self.device), **prompts).cpu()

    @staticmethod
    def _slice_index(request: dict, clicks: list, roi: list) -> int:
        if request.get("slice") is not None and int(request["slice"]) >= 0:
            return int(request["slice"])
        clicked = [int(p[2]) for p in clicks if len(p) > 2]
        if clicked:
            return clicked[0]
        if len(roi) == 6:
            return round((roi[4] + roi[5]) / 2)
        raise ValueError("no slice to segment: click on a slice, or give 'slice' or a 3D ROI")


def _result_options(request: dict) -> dict:
    """The writer's options a client may send (extension, dtype, compression)."""
    keys = ("result_extension", "result_dtype", "result_compress", "result_write_to_file")
    return {k: request[k] for k in keys if k in request}
