"""A model file that is a pickle, or does not match its recorded hash, is refused
before any code in it can run (issue: delivery guarantees, fault 10)."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

from models.artifacts import METADATA_FILE, WEIGHTS_FILE, ArtifactError, load_artifact, save_artifact


class _Planted:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _rehash(version_dir: Path) -> None:
    """An attacker who can write the folder can also fix the recorded hash."""
    meta = json.loads((version_dir / METADATA_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256((version_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    (version_dir / METADATA_FILE).write_text(json.dumps(meta))


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    art = save_artifact(tmp_path, "m", {"w": torch.arange(4.0)}, {"kind": "test"})
    return art.path


def test_a_valid_artifact_loads(artifact: Path) -> None:
    assert torch.equal(load_artifact(artifact.parent.parent, "m").tensors["w"], torch.arange(4.0))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_plain_pickle_never_runs(artifact: Path, tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / f"pwned-{protocol}"
    (artifact / WEIGHTS_FILE).write_bytes(pickle.dumps(_Planted(marker), protocol=protocol))
    _rehash(artifact)
    with pytest.raises(ArtifactError):
        load_artifact(artifact.parent.parent, "m")
    assert not marker.exists(), "code inside the model file ran"


def test_torch_save_file_never_runs(artifact: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned-torch"
    torch.save({"w": torch.arange(4.0), "x": _Planted(marker)}, artifact / WEIGHTS_FILE)
    _rehash(artifact)
    with pytest.raises(ArtifactError):
        load_artifact(artifact.parent.parent, "m")
    assert not marker.exists(), "code inside the model file ran"


def test_wrong_hash_refused_before_parsing(artifact: Path) -> None:
    weights = artifact / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(artifact.parent.parent, "m")


def test_missing_hash_refused(artifact: Path) -> None:
    meta = json.loads((artifact / METADATA_FILE).read_text())
    del meta["weights_sha256"]
    (artifact / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError):
        load_artifact(artifact.parent.parent, "m")
