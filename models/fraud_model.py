"""The fraud MLP and its inference wrapper.

The network is built from the ``arch`` dict in the artifact's metadata, its
weights come from safetensors through :func:`models.artifacts.load_artifact`
(sha256 checked, weights only), and the feature normalisation (mean/std from
the training rows) lives in the metadata and is applied inside
:meth:`FraudModel.predict`, so callers pass raw feature rows in
``FRAUD_FEATURES`` order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from feature_store.fraud import FRAUD_FEATURES
from models.artifacts import Artifact, ArtifactError, load_artifact
from models.runtime import select_device

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def default_arch(n_inputs: int = len(FRAUD_FEATURES), hidden: tuple[int, ...] = (64, 64), activation: str = "relu", dropout: float = 0.0) -> dict[str, Any]:
    return {"type": "mlp", "inputs": int(n_inputs), "hidden": [int(h) for h in hidden], "activation": activation, "dropout": float(dropout)}


def build_mlp(arch: Mapping[str, Any]) -> nn.Sequential:
    """``Linear -> act (-> Dropout)`` per hidden layer, then ``Linear(., 1)``; outputs logits.

    State-dict keys are ``<index>.weight`` / ``<index>.bias`` of the Sequential.
    """
    if arch.get("type") != "mlp":
        raise ArtifactError(f"unsupported fraud model arch type {arch.get('type')!r}")
    try:
        n_in = int(arch["inputs"])
        hidden = [int(h) for h in arch["hidden"]]
        act = ACTIVATIONS[arch.get("activation", "relu")]
        dropout = float(arch.get("dropout", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"bad fraud model arch {dict(arch)!r}: {exc}") from None
    layers: list[nn.Module] = []
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = h
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


class _Scorer(nn.Module):
    """Normalise, run the MLP, squash to a probability; one score per row."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((x - self.mean) * self.inv_std)).squeeze(-1)


def safe_std(std: np.ndarray) -> np.ndarray:
    """Standard deviations with (near-)constant features mapped to 1."""
    std = np.asarray(std, dtype=np.float32).copy()
    std[~np.isfinite(std) | (std < 1e-6)] = 1.0
    return std


class FraudModel:
    """A loaded fraud model version, ready to score batches of feature rows."""

    NAME = "fraud-mlp"

    def __init__(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], device: str = "auto") -> None:
        meta = dict(metadata)
        if meta.get("kind", "fraud") != "fraud":
            raise ArtifactError(f"artifact kind is {meta.get('kind')!r}, not 'fraud'")
        features = tuple(meta.get("features") or ())
        if features != FRAUD_FEATURES:
            raise ArtifactError(
                f"artifact features {list(features)} do not match this code's FRAUD_FEATURES {list(FRAUD_FEATURES)}"
            )
        arch = meta.get("arch")
        if not isinstance(arch, Mapping) or int(arch.get("inputs", -1)) != len(features):
            raise ArtifactError("artifact metadata lacks an arch whose inputs match its features")
        try:
            norm = meta["normalisation"]
            mean = np.asarray(norm["mean"], dtype=np.float32)
            std = safe_std(np.asarray(norm["std"], dtype=np.float32))
            thresholds = {"review": float(meta["thresholds"]["review"]), "block": float(meta["thresholds"]["block"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"artifact metadata lacks normalisation or thresholds: {exc}") from None
        if mean.shape != (len(features),) or std.shape != (len(features),):
            raise ArtifactError("normalisation mean/std length does not match the features")
        net = build_mlp(arch)
        try:
            net.load_state_dict(dict(tensors), strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"weights do not fit arch {dict(arch)!r}: {exc}") from None

        self.device = select_device(device)
        self.name = str(meta.get("model_name") or meta.get("name") or self.NAME)
        self.version = str(meta.get("version", "0"))
        self.metadata = meta
        self.features = features
        self.thresholds = thresholds
        self.mean = mean
        self.std = std
        self._n = len(features)
        self._module = _Scorer(net, torch.from_numpy(mean), torch.from_numpy(std)).to(self.device).eval()
        for p in self._module.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: str = "auto") -> "FraudModel":
        return cls(artifact.tensors, artifact.metadata, device)

    @classmethod
    def load(cls, model_dir: str | Path, version: str | None = None, device: str = "auto") -> "FraudModel":
        """Load ``<model_dir>/fraud-mlp/<version>`` (the latest by default)."""
        return cls.from_artifact(load_artifact(Path(model_dir), cls.NAME, version), device)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for raw feature rows ``[n, F]`` (float32, one per row)."""
        if self._module is None:
            raise RuntimeError("FraudModel is closed")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._n:
            raise ValueError(f"expected feature rows of shape [n, {self._n}], got {list(x.shape)}")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x))
            if self.device.type != "cpu":
                t = t.to(self.device, non_blocking=False)
            out = self._module(t)
            return out.to("cpu").numpy().astype(np.float32, copy=False).reshape(-1)

    def action(self, score: float) -> str:
        """``block`` if score >= block threshold, else ``review`` if >= review, else ``allow``."""
        if score >= self.thresholds["block"]:
            return "block"
        if score >= self.thresholds["review"]:
            return "review"
        return "allow"

    def close(self) -> None:
        self._module = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
