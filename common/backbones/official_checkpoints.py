"""Download locations and checksums of the official SAM and SAM2.1 checkpoints.

Recorded once here so that every bundle's ``large_files.yml`` and the checkpoint loader agree.
Sources: the segment-anything and sam2 READMEs (URLs); sha256 values as published and cross-checked
by many independent projects (see ``shared/design/data.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "OfficialCheckpoint",
    "OFFICIAL_CHECKPOINTS",
    "PAPER_LARGE_FILES",
    "download_hint",
    "download_paper_weights",
    "large_files_entry",
]

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One released checkpoint file.

    Attributes:
        filename: file name as released.
        url: download URL.
        sha256: hex digest of the file.
        num_bytes: size of the file in bytes, where recorded.
    """

    filename: str
    url: str
    sha256: str
    num_bytes: int | None


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "sam_vit_b": OfficialCheckpoint(
        "sam_vit_b_01ec64.pth",
        _SAM_URL + "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
    ),
    "sam_vit_l": OfficialCheckpoint(
        "sam_vit_l_0b3195.pth",
        _SAM_URL + "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        None,  # size not recorded in our sources; the sha256 is what is checked
    ),
    "sam_vit_h": OfficialCheckpoint(
        "sam_vit_h_4b8939.pth",
        _SAM_URL + "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
    ),
    "sam2.1_hiera_t": OfficialCheckpoint(
        "sam2.1_hiera_tiny.pt",
        _SAM2_URL + "sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        156_008_466,
    ),
    "sam2.1_hiera_s": OfficialCheckpoint(
        "sam2.1_hiera_small.pt",
        _SAM2_URL + "sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        184_416_285,
    ),
    "sam2.1_hiera_b+": OfficialCheckpoint(
        "sam2.1_hiera_base_plus.pt",
        _SAM2_URL + "sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        323_606_802,
    ),
    "sam2.1_hiera_l": OfficialCheckpoint(
        "sam2.1_hiera_large.pt",
        _SAM2_URL + "sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        898_083_611,
    ),
}


#: the file in each bundle listing the paper backbone's checkpoint (``large_files.yml`` lists what the default
#: configuration downloads: nothing, since LiteMedSAM's weights ship with the package)
PAPER_LARGE_FILES = "paper_large_files.yml"


def download_hint(checkpoint: str | os.PathLike, bundle_root: str | os.PathLike) -> str:
    """How to get a missing official checkpoint: the bundle's download command when its ``paper_large_files.yml``
    lists the file, else the file's official URL and sha256."""
    name = Path(checkpoint).name
    listed = Path(bundle_root) / PAPER_LARGE_FILES
    if listed.is_file() and f'"models/{name}"' in listed.read_text():
        return f"`python -m common.backbones --download {bundle_root}` ({PAPER_LARGE_FILES})"
    for official in OFFICIAL_CHECKPOINTS.values():
        if official.filename == name:
            return f"download {official.url} (sha256 {official.sha256}) to {checkpoint}"
    return f"put the released file at {checkpoint}"


def download_paper_weights(bundle_root: str | os.PathLike) -> list[Path]:
    """Fetch every file the bundle's ``paper_large_files.yml`` lists into the bundle (MONAI's ``download_url``,
    sha256 checked; a file already there with the right checksum is kept). MONAI's own ``download_large_files
    --large_file_name`` cannot read a file of another name in MONAI 1.6.1 (it never sets the path it reads), and
    without that option it reads only ``large_files*``, which the default configuration keeps empty.

    Raises:
        FileNotFoundError: the bundle has no ``paper_large_files.yml``.
    """
    import yaml
    from monai.apps import download_url

    listed = Path(bundle_root) / PAPER_LARGE_FILES
    if not listed.is_file():
        raise FileNotFoundError(f"{listed}: no such file (a bundle lists its paper backbone's checkpoint there)")
    written = []
    for entry in yaml.safe_load(listed.read_text()).get("large_files") or []:
        target = (Path(bundle_root) / entry["path"]).resolve()
        if Path(bundle_root).resolve() not in target.parents:
            raise ValueError(f"{listed}: {entry['path']} points outside the bundle")
        hash_type = entry.get("hash_type", "sha256")
        download_url(entry["url"], str(target), hash_val=entry.get("hash_val"), hash_type=hash_type)
        written.append(target)
    return written


def large_files_entry(backbone: str) -> dict[str, str]:
    """The ``large_files.yml`` entry (``path``, ``url``, ``hash_val``, ``hash_type``) for ``backbone``."""
    if backbone not in OFFICIAL_CHECKPOINTS:
        raise KeyError(f"no official checkpoint is published for backbone {backbone!r}")
    ckpt = OFFICIAL_CHECKPOINTS[backbone]
    return {"path": f"models/{ckpt.filename}", "url": ckpt.url, "hash_val": ckpt.sha256, "hash_type": "sha256"}
