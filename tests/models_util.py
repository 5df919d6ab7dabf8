"""Small, randomly initialised models for unit tests (no training, no corpus)."""

from __future__ import annotations

from typing import Any

import torch

from feature_store.spam import SPAM_DENSE_FEATURES
from models.spam_model import SpamModel, build_net
from models.text import SCHEME


def tiny_spam_net(seed: int = 0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A 4,096-bucket spam net with random weights, and its metadata."""
    torch.manual_seed(seed)
    meta = {
        "kind": "spam", "model_name": SpamModel.NAME, "dense_features": list(SPAM_DENSE_FEATURES),
        "normalisation": {"mean": [0.5] * len(SPAM_DENSE_FEATURES), "std": [2.0] * len(SPAM_DENSE_FEATURES)},
        "text": {"scheme": SCHEME, "n_buckets": 4096, "max_tokens": 200, "bigrams": True, "char_ngrams": [3]},
        "arch": {"dim": 8, "hidden": 8, "mode": "mean", "clip": 8.0},
        "thresholds": {"quarantine": 0.5, "reject": 0.9},
    }
    net = build_net(meta)
    for p in net.parameters():
        torch.nn.init.normal_(p, 0.0, 0.5)
    return net, meta
