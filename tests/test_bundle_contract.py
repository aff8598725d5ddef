"""The bundle config contract resolves through MONAI's own config parser."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from common.backbones.litemedsam import packaged_litemedsam_checkpoint

CONTRACT = {
    "imports": ["$import common", "$import common.backbones"],
    "bundle_root": "/bundle",
    "backbone": "sam_vit_test",
    "backbone_checkpoint": "$common.backbones.default_checkpoint(@backbone, @bundle_root)",
    "network_def": {
        "_target_": "common.networks.SamSegmentationNet",
        "backbone": "@backbone",
        "checkpoint": "@backbone_checkpoint",
    },
}


def _parse(**overrides):
    parser = ConfigParser(dict(CONTRACT))
    for key, value in overrides.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize(
    "backbone,expected",
    [
        ("sam_vit_test", None),
        ("litemedsam", packaged_litemedsam_checkpoint()),
        ("sam_vit_b", "/bundle/models/sam_vit_b_01ec64.pth"),
        ("sam2.1_hiera_l", "/bundle/models/sam2.1_hiera_large.pt"),
    ],
)
def test_backbone_checkpoint_default_follows_backbone(backbone, expected):
    assert _parse(backbone=backbone).get_parsed_content("backbone_checkpoint") == expected


def test_network_def_builds_from_the_contract_keys():
    net = _parse().get_parsed_content("network_def")
    assert net.spec.name == "sam_vit_test"
    assert net(torch.rand(1, 1, 40, 40)).shape == (1, 1, 40, 40)


def test_explicit_null_checkpoint_builds_random_weights():
    net = _parse(backbone="sam2.1_hiera_test", backbone_checkpoint=None).get_parsed_content("network_def")
    assert net.spec.name == "sam2.1_hiera_test"
