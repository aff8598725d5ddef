"""Package a bundle as ``<name>_v<version>.zip`` the way the MONAI model zoo publishes bundles.

    python -m common.package_bundle --bundle bundles/sam2lora_fundus_segmentation --output_dir dist \\
        [--weights runs/sam2lora/models/model.pt]

The zip holds one top folder ``<name>/`` with ``configs/``, ``docs/``, ``LICENSE``, ``large_files.yml`` (empty: the
default configuration downloads nothing), ``paper_large_files.yml`` (the paper backbone's checkpoint) and
``models/`` (its README and the adapter-only ``model.pt``, never base checkpoints: those are fetched from their
official URLs with ``python -m common.backbones --download <bundle>`` from ``paper_large_files.yml``). It is byte-for-byte reproducible: sorted
entries, fixed timestamps and permissions. Users install it with
``python -m monai.bundle download --name <name> --url file:///path/<name>_v<version>.zip --bundle_dir <folder>``
(or any https URL it is uploaded to).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

__all__ = ["MAX_ADAPTER_MB", "PackagingError", "bundle_files", "package_bundle", "main"]

#: adapter-only checkpoints are a few MB; anything this large holds base weights, which the zoo never ships
MAX_ADAPTER_MB = 200
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can record: no build date leaks into the archive
_REQUIRED = ("configs/metadata.json", "configs/inference.json", "LICENSE", "large_files.yml", "docs/README.md")


class PackagingError(ValueError):
    """The bundle cannot be published as it is (missing files, wrong metadata, base weights in ``models/``)."""


def bundle_files(bundle: Path, weights: Path | None = None) -> dict[str, Path]:
    """Archive name (relative to the bundle) → source file, of everything that is published."""
    missing = [name for name in _REQUIRED if not (bundle / name).is_file()]
    if missing:
        raise PackagingError(f"{bundle} is not a complete bundle: missing {', '.join(missing)}")
    files: dict[str, Path] = {}
    for folder in ("configs", "docs"):
        for path in sorted((bundle / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(bundle).as_posix()] = path
    for name in ("LICENSE", "large_files.yml", "paper_large_files.yml", "models/README.md"):
        if (bundle / name).is_file():
            files[name] = bundle / name
    weights = weights or (bundle / "models" / "model.pt")
    if weights.is_file():
        _check_adapter_weights(weights)
        files["models/model.pt"] = weights
    return files


def _check_adapter_weights(path: Path) -> None:
    from common.backbones.checkpoint import CheckpointError, read_checkpoint

    size_mb = path.stat().st_size / 2**20
    if size_mb > MAX_ADAPTER_MB:
        raise PackagingError(
            f"{path} is {size_mb:.0f} MB: the zoo ships adapter-only weights (a few MB); base weights belong in "
            "large_files.yml"
        )
    try:
        state = read_checkpoint(path)  # weights_only: a file that would run code is refused here, not at users
    except CheckpointError as error:
        raise PackagingError(f"{path} is not a loadable adapter checkpoint: {error}") from error
    if not state:
        raise PackagingError(f"{path} holds no tensors")


def package_bundle(bundle: str | Path, output_dir: str | Path, weights: str | Path | None = None) -> Path:
    """Write ``<output_dir>/<name>_v<version>.zip`` for the bundle folder ``bundle`` (name = folder name, version
    from ``configs/metadata.json``, which must list it in its changelog); returns the zip's path."""
    bundle = Path(bundle).resolve()
    files = bundle_files(bundle, Path(weights) if weights else None)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    version = meta.get("version")
    if not version or version not in meta.get("changelog", {}):
        raise PackagingError(f"metadata.json version {version!r} must be set and described in its changelog")
    name = bundle.name
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{name}_v{version}.zip"
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for relative in sorted(files):
            info = zipfile.ZipInfo(f"{name}/{relative}", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[relative].read_bytes())
    partial.replace(target)  # never a half-written zip under the final name
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.package_bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/sam2lora_fundus_segmentation")
    parser.add_argument("--output_dir", default="dist")
    parser.add_argument("--weights", default=None, help="adapter-only model.pt to ship (default: the bundle's own)")
    args = parser.parse_args(argv)
    try:
        path = package_bundle(args.bundle, args.output_dir, args.weights)
    except (PackagingError, OSError) as error:  # OSError: a missing file, an output path that is a file
        print(f"error: {error}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    print(f"{path} ({path.stat().st_size / 1024:.0f} KB, {len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
