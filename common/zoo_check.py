"""The MONAI model zoo's own checks on this project's bundles, offline, as the zoo's CI runs them before a merge.

    python -m common.zoo_check [--bundles bundles] [--names balr_sam_segmentation ...] [--backbone <test backbone>]

Per bundle: the zoo's required files; a version that the changelog describes; ``metadata.json`` against MONAI's
schema (``--schema``, default ``../shared/monai/meta_schema_20240725.json``; skipped with a note when absent);
``eval_metrics`` filled and ``pred`` ``value_range`` that describes logits (empty) or probabilities; the pre-commit
hooks' formatting of every JSON file (ASCII, final newline, parseable); a default ``large_files.yml`` that downloads
nothing the default configs do not use; MONAI's ``verify_net_in_out`` on ``inference.json`` (the network built as
declared and fed the declared input); ``ckpt_export`` (TorchScript), which passes when the export works, or is
reported as a documented exclusion when the card states that TorchScript is unsupported; and the card's sections of
the zoo's template. One line per check; exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CARD_SECTIONS", "CheckResult", "check_bundle", "main"]

#: the zoo's required bundle files
REQUIRED_FILES = ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md", "large_files.yml")
#: the sections of the zoo's model card template
CARD_SECTIONS = (
    "Model overview",
    "Data",
    "Training configuration",
    "Input",
    "Output",
    "Performance",
    "Limitations",
    "Citation",
    "License",
)
#: a card longer than this is not read (the zoo's cards are 700-1,500 words)
MAX_CARD_WORDS = 1500
TORCHSCRIPT_STATEMENT = "TorchScript and TensorRT are not supported"


@dataclass
class CheckResult:
    """One check of one bundle: ``status`` is ``pass``, ``fail``, ``excluded`` (a documented exclusion) or ``skip``."""

    bundle: str
    check: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:8s} {self.bundle}: {self.check}" + (f" ({self.detail})" if self.detail else "")


def _files(bundle: Path) -> tuple[str, str]:
    missing = [name for name in REQUIRED_FILES if not (bundle / name).is_file()]
    return ("fail", "missing " + ", ".join(missing)) if missing else ("pass", "")


def _version(meta: dict) -> tuple[str, str]:
    version = meta.get("version")
    if version and version in meta.get("changelog", {}):
        return "pass", version
    return "fail", f"version {version!r} is not described in the changelog"


def _schema(bundle: Path, schema: Path | None) -> tuple[str, str]:
    if schema is None or not schema.is_file():
        return "skip", f"schema not found at {schema}"
    from monai.bundle import verify_metadata

    try:
        verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    except Exception as error:  # the schema validator's own error type
        return "fail", str(error).splitlines()[0]
    return "pass", schema.name


def _metadata_values(meta: dict) -> tuple[str, str]:
    problems = []
    if not meta.get("eval_metrics"):
        problems.append("eval_metrics is empty")
    pred = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    if pred.get("value_range") not in ([], [0, 1]):
        problems.append(f"pred value_range {pred.get('value_range')!r}")
    return ("fail", "; ".join(problems)) if problems else ("pass", "")


def _formatting(bundle: Path) -> tuple[str, str]:
    problems = []
    for path in sorted((bundle / "configs").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            problems.append(f"{path.name}: no final newline")
        if not text.isascii():
            problems.append(f"{path.name}: non-ASCII text")
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}: {error}")
    return ("fail", "; ".join(problems)) if problems else ("pass", "")


def _large_files(bundle: Path) -> tuple[str, str]:
    import yaml

    entries = (yaml.safe_load((bundle / "large_files.yml").read_text()) or {}).get("large_files") or []
    if entries:
        return "fail", f"downloads {', '.join(e['path'] for e in entries)} although the default configs need none"
    return "pass", "nothing to download"


def _net_in_out(bundle: Path, backbone: str | None) -> tuple[str, str]:
    from monai.bundle import verify_net_in_out

    extra = {"backbone": backbone} if backbone else {}
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(bundle / "configs" / "inference.json"),
            device="cpu",
            bundle_root=str(bundle),
            **extra,
        )
    except Exception as error:
        return "fail", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return "pass", f"backbone {backbone}" if backbone else "default backbone"


def _torchscript(bundle: Path, backbone: str | None, card: str) -> tuple[str, str]:
    from monai.bundle import ckpt_export

    extra = {"backbone": backbone} if backbone else {}
    with tempfile.TemporaryDirectory() as folder:
        try:
            ckpt_export(
                net_id="network_def",
                filepath=str(Path(folder) / "model.ts"),
                ckpt_file=str(bundle / "models" / "model.pt"),
                meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=str(bundle / "configs" / "inference.json"),
                bundle_root=str(bundle),
                **extra,
            )
        except Exception as error:
            reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            if TORCHSCRIPT_STATEMENT in card:
                return "excluded", f"documented in the card; ckpt_export: {reason}"
            return "fail", f"ckpt_export failed and the card does not say TorchScript is unsupported: {reason}"
    return "pass", ""


def _card(card: str) -> tuple[str, str]:
    headings = set(re.findall(r"^## (.+?)\s*$", card, flags=re.M))
    missing = [s for s in CARD_SECTIONS if s not in headings]
    words = len(card.split())
    problems = ([f"missing sections {', '.join(missing)}"] if missing else []) + (
        [f"{words} words (at most {MAX_CARD_WORDS})"] if words > MAX_CARD_WORDS else []
    )
    return ("fail", "; ".join(problems)) if problems else ("pass", f"{words} words")


def check_bundle(bundle: Path, schema: Path | None = None, backbone: str | None = None) -> list[CheckResult]:
    """Every check of this module on one bundle folder."""
    name = bundle.name
    status, detail = _files(bundle)
    results = [CheckResult(name, "required files", status, detail)]
    if status == "fail":
        return results
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    card = (bundle / "docs" / "README.md").read_text()
    checks = [
        ("version and changelog", lambda: _version(meta)),
        ("metadata schema", lambda: _schema(bundle, schema)),
        ("eval_metrics and output value_range", lambda: _metadata_values(meta)),
        ("JSON formatting (pre-commit hooks)", lambda: _formatting(bundle)),
        ("default large_files.yml", lambda: _large_files(bundle)),
        ("verify_net_in_out", lambda: _net_in_out(bundle, backbone)),
        ("TorchScript export (ckpt_export)", lambda: _torchscript(bundle, backbone, card)),
        ("model card", lambda: _card(card)),
    ]
    for check, run in checks:
        try:
            status, detail = run()
        except Exception:  # a check that breaks is a failure of that check, not of the others
            status, detail = "fail", traceback.format_exc().strip().splitlines()[-1]
        results.append(CheckResult(name, check, status, detail))
    return results


def main(argv: list[str] | None = None) -> int:
    from common.cli import bundles_folder

    parser = argparse.ArgumentParser(prog="python -m common.zoo_check", description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", default=None, help="folder holding the bundles (default: bundles/ here)")
    parser.add_argument("--names", nargs="+", default=None, help="only these bundles")
    parser.add_argument(
        "--schema",
        default=None,
        help="MONAI's metadata schema file (default: ../shared/monai/meta_schema_20240725.json from here)",
    )
    parser.add_argument(
        "--backbone", default=None, help="build the networks with this backbone (default: each bundle's own)"
    )
    settings = parser.parse_args(argv)
    try:
        folder = bundles_folder(settings.bundles)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    schema = Path(settings.schema) if settings.schema else Path.cwd().parent / "shared" / "monai" / (
        "meta_schema_20240725.json"
    )
    bundles = sorted(p for p in folder.iterdir() if (p / "configs" / "metadata.json").is_file())
    if settings.names:
        bundles = [p for p in bundles if p.name in settings.names]
    failed = 0
    for bundle in bundles:
        for result in check_bundle(bundle, schema, settings.backbone):
            print(result.line(), flush=True)
            failed += result.status == "fail"
    print(f"{len(bundles)} bundles, {failed} failed checks")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
