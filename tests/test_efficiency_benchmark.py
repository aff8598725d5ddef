"""``python -m common.benchmark``: the efficiency table's rows and ratios, on tiny test backbones (no timing asserted:
speed targets are read from the benchmark's own output, not tested)."""

from __future__ import annotations

import json

import pytest

from common.benchmark.efficiency import METHODS, build, main, table_rows


def test_each_method_builds_its_bundle_network_on_any_backbone():
    base = build("base", "sam_vit_test", 128)
    assert not any(p.requires_grad for p in base.parameters())
    assert all(p.requires_grad for p in build("full", "sam_vit_test", 128).parameters())
    for method in METHODS:
        network = build(method, "sam_vit_test", 128)
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        assert 0 < trainable < sum(p.numel() for p in network.parameters()), method


def test_method_networks_take_config_values_such_as_precomputed_label_embeddings(tmp_path):
    import torch

    # S-SAM without its text model: label names looked up in a file, as on a GPU machine run from the offline kit
    names = ["anterior hippocampus", "posterior hippocampus"]  # its train.json labels
    torch.save({name: torch.randn(384) for name in names}, tmp_path / "labels.pt")
    torch.save({"liver": torch.randn(384)}, tmp_path / "other.pt")
    precomputed = {"text_encoder": "precomputed", "text_encoder_weights": str(tmp_path / "labels.pt")}
    assert build("s_sam", "sam_vit_test", 128, precomputed).label_names == names
    with pytest.raises(RuntimeError) as error:
        build("s_sam", "sam_vit_test", 128, {**precomputed, "text_encoder_weights": str(tmp_path / "other.pt")})
    assert "no embedding" in str(error.value.__cause__)


def test_the_command_writes_a_table_with_ratios_to_full_fine_tuning_and_the_base(tmp_path):
    status = main(["--backbones", "sam_vit_test", "--methods", "sam2lora", "conv_lora", "--input_size", "128",
                   "--repeats", "1", "--output_dir", str(tmp_path)])  # fmt: skip
    assert status == 0
    result = json.loads((tmp_path / "efficiency.json").read_text())
    rows = {row["kind"]: row for row in result["rows"]}
    assert set(rows) == {"base", "full", "sam2lora", "conv_lora"}
    full, lora, conv = rows["full"], rows["sam2lora"], rows["conv_lora"]
    assert full["trainable_parameters"] == full["total_parameters"]
    assert 0 < lora["trainable_parameters"] < lora["total_parameters"]  # (rank 64 outweighs a tiny test backbone)
    assert lora["adapter_file_bytes"] > 0 and "adapter_file_bytes" not in full
    # every LoRA layer folds into its weight; Conv-LoRA's experts cannot
    assert lora["unmergeable_layers"] == 0 and lora["merged_layers"] > 0
    assert conv["unmergeable_layers"] > 0
    assert all(r["train_step_seconds"] > 0 and r["train_step_flops"] > 0 for r in (full, lora, conv))
    table = (tmp_path / "efficiency.md").read_text()
    assert "python -m common.benchmark --backbones sam_vit_test" in table
    assert "full fine-tuning" in table and "< 5 % trainable" in table
    expected = f"{lora['train_step_seconds'] / full['train_step_seconds']:.2f}×"
    assert expected in table


def test_table_ratios_and_mfu_column():
    row = dict(
        backbone="b",
        input_size=64,
        batch_size=2,
        total_parameters=100,
        trainable_parameters=100,
        train_step_seconds=2.0,
        train_step_peak_bytes=4 * 2**20,
        train_step_flops=4e12,
        inference_seconds=1.0,
    )
    rows = [
        {**row, "kind": "base"},
        {**row, "kind": "full"},
        {**row, "kind": "s_sam", "trainable_parameters": 1, "train_step_seconds": 1.0, "adapter_file_bytes": 2**20,
         "train_step_peak_bytes": 2**20, "merged_inference_seconds": 1.5, "merged_layers": 3, "unmergeable_layers": 0},
    ]  # fmt: skip
    header, body = table_rows(rows, peak_tflops=4.0)
    assert "MFU" in header and len(body) == 2
    s_sam = dict(zip(header, body[1]))
    assert s_sam["train step s (vs full FT)"] == "1.000 (0.50×)"
    assert s_sam["train step peak MB (vs full FT)"] == "1.0 (0.25×)"
    assert s_sam["merged (vs base)"] == "1.50×" and s_sam["MFU"] == "100.0 %"
    assert s_sam["trainable (share)"] == "1 (1.00 %)"


@pytest.mark.parametrize("bad", [["--methods", "lora"], [], ["--output_dir", "x", "--set", "no_value"]])
def test_bad_arguments_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        main(bad)


def test_live_tensor_memory_counts_new_storages_until_they_die():
    import gc

    import torch

    from common.benchmark.live_memory import LiveTensorMemory

    existing = torch.zeros(1024, 1024)
    with LiveTensorMemory() as memory:
        first = torch.ones(1024, 1024)  # 4 MiB
        second = first * 2  # 4 MiB more: peak 8
        del first
        gc.collect()
        second.add_(1)  # in place: nothing new
        flat = second.view(-1)  # a view: nothing new
        existing.mul_(3)  # storage from before: not counted
    assert memory.peak_bytes == 8 * 2**20 and memory.current_bytes == 4 * 2**20
    assert flat.numel() == 2**20
