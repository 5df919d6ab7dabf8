"""Versioned model artifacts: safetensors weights plus JSON metadata.

Layout: ``<model_dir>/<name>/<version>/{model.safetensors,metadata.json}`` with
integer versions. The metadata records the sha256 of the weights file; loading
checks it before the file is parsed, and only safetensors is accepted, so a
pickle (or any file that was swapped after training) is refused before any code
in it could run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"


class ArtifactError(Exception):
    """A model artifact is missing, corrupt or not weights-only."""


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    version: str
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions(model_dir: Path, name: str) -> list[int]:
    root = Path(model_dir) / name
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / METADATA_FILE).is_file())


def latest_version(model_dir: Path, name: str) -> str | None:
    vs = versions(model_dir, name)
    return str(vs[-1]) if vs else None


def save_artifact(model_dir: Path, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Artifact:
    """Write a new version atomically (temp folder, then rename) and return it."""
    root = Path(model_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; workers may run as another user
    try:
        weights = tmp / WEIGHTS_FILE
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(weights))
        weights.chmod(0o644)
        while True:
            version = str((versions(model_dir, name) or [0])[-1] + 1)
            meta = dict(metadata, name=name, version=version, weights_sha256=_sha256(weights))
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            (tmp / METADATA_FILE).chmod(0o644)
            try:
                os.rename(tmp, root / version)
                break
            except OSError:
                if not (root / version).exists():
                    raise
        return load_artifact(model_dir, name, version)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_artifact(model_dir: Path, name: str, version: str | None = None) -> Artifact:
    """Load a version (the latest by default), verifying the weights' hash first."""
    version = version or latest_version(model_dir, name)
    if version is None:
        raise ArtifactError(f"no artifact for model {name!r} under {model_dir}; run `streaminfer train`")
    path = Path(model_dir) / name / version
    meta_path = path / METADATA_FILE
    weights = path / WEIGHTS_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise ArtifactError(f"{path} lacks {METADATA_FILE} or {WEIGHTS_FILE}")
    metadata = json.loads(meta_path.read_text())
    expected = metadata.get("weights_sha256")
    actual = _sha256(weights)
    if not expected or actual != expected:
        raise ArtifactError(f"{weights} sha256 {actual} does not match metadata {expected}; refusing to load")
    with weights.open("rb") as f:
        head = f.read(8)
    # A safetensors file starts with a little-endian u64 header length; a pickle
    # or zip-based torch.save file does not parse as one and is rejected here.
    if len(head) < 8 or int.from_bytes(head, "little") > 100 * 1024 * 1024:
        raise ArtifactError(f"{weights} is not a safetensors file; refusing to load")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{weights} is not a valid safetensors file: {exc}") from None
    return Artifact(name, version, path, metadata, tensors)
