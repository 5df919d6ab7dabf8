"""The spam classifier: hashed n-gram EmbeddingBag + dense features + MLP head.

Architecture (``arch`` in the metadata)::

    ids  -> EmbeddingBag(n_buckets, dim, mode)  -> e            (dim)
    dense -> (x - mean) / std, clipped to +-clip -> z            (n_dense)
    [e, z] -> Linear(dim + n_dense, hidden) -> ReLU -> Linear(hidden, 1) -> sigmoid

Token ids come from ``models.text.hash_email_text`` with the artifact's text
parameters (``tokens_batch``: the same ids for a whole batch from the batched
hasher, already flat for the EmbeddingBag), dense features from ``feature_store.spam.spam_dense_features``;
``predict`` takes the raw dense rows and normalises them with the artifact's
mean/std, so the serving path never re-implements the normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from models.artifacts import ArtifactError, load_artifact
from models.fraud_model import PRECISIONS, resolve_precision
from models.runtime import select_device
from models.text import SCHEME, hash_email_text, hash_email_texts_flat
from streams.events import Email


class SpamNet(nn.Module):
    def __init__(self, n_buckets: int, dim: int, n_dense: int, hidden: int, mode: str = "mean",
                 clip: float = 8.0, sparse: bool = False) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(n_buckets, dim, mode=mode, sparse=sparse)
        self.fc1 = nn.Linear(dim + n_dense, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        # Not persistent: the metadata's normalisation is the single source.
        self.register_buffer("mean", torch.zeros(n_dense), persistent=False)
        self.register_buffer("std", torch.ones(n_dense), persistent=False)
        self.clip = clip

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits, one per bag."""
        return self.head(self.embedding(ids, offsets), dense)

    def head(self, e: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits from pooled embeddings ``e`` and raw dense rows."""
        z = ((dense - self.mean) / self.std).clamp(-self.clip, self.clip)
        if e.dtype != z.dtype:  # reduced precision (set_dtype): normalise in float32, then cast
            z = z.to(e.dtype)
        h = torch.relu(self.fc1(torch.cat((e, z), dim=1)))
        return self.fc2(h).squeeze(1)

    def set_dtype(self, dtype: torch.dtype) -> "SpamNet":
        """Weights (embedding table and head) in ``dtype``; the normalisation buffers stay float32."""
        self.embedding.to(dtype)
        self.fc1.to(dtype)
        self.fc2.to(dtype)
        return self


def flatten(token_ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids, offsets) for an EmbeddingBag batch."""
    if not token_ids:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    offsets = np.zeros(len(token_ids), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    flat = np.concatenate(token_ids).astype(np.int64, copy=False) if lengths.sum() else np.empty(0, dtype=np.int64)
    return flat, offsets


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """A batch's token ids in EmbeddingBag form: email ``i``'s ids are
    ``ids[offsets[i]:offsets[i + 1]]``. ``predict`` takes it as is (no per-email
    arrays to build and concatenate again); indexing gives one email's ids."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self.offsets)
        if not -n <= i < n:
            raise IndexError(f"email {i} of {n}")
        i %= n
        end = int(self.offsets[i + 1]) if i + 1 < n else len(self.ids)
        return self.ids[int(self.offsets[i]):end]

    def as_list(self) -> list[np.ndarray]:
        """One (view) array per email."""
        bounds = self.offsets.tolist() + [len(self.ids)]
        return [self.ids[a:b] for a, b in zip(bounds, bounds[1:])]


def build_net(metadata: dict[str, Any]) -> SpamNet:
    arch = metadata["arch"]
    text = metadata["text"]
    norm = metadata["normalisation"]
    net = SpamNet(int(text["n_buckets"]), int(arch["dim"]), len(metadata["dense_features"]), int(arch["hidden"]),
                  mode=arch.get("mode", "mean"), clip=float(arch.get("clip", 8.0)))
    mean = torch.tensor(norm["mean"], dtype=torch.float32)
    std = torch.tensor(norm["std"], dtype=torch.float32)
    net.mean.copy_(mean)
    net.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))
    return net


class SpamModel:
    NAME = "spam-ngram"

    def __init__(self, net: SpamNet, metadata: dict[str, Any], version: str, device: torch.device,
                 precision: str = "fp32", pinned: bool = False) -> None:
        """``precision`` and ``pinned`` act on cuda only (on cpu: the exact float32 path);
        their effective values are the attributes of the same names."""
        self.precision = resolve_precision(precision, device)
        self.pinned = bool(pinned) and device.type == "cuda"
        self.net = net.to(device).eval()
        if self.precision != "fp32":
            self.net.set_dtype(PRECISIONS[self.precision])
        self._host: dict[str, torch.Tensor] = {}
        self.device = device
        self.metadata = metadata
        self.name = self.NAME
        self.version = version
        self.thresholds = {k: float(v) for k, v in metadata["thresholds"].items()}
        self.dense_features = tuple(metadata["dense_features"])
        text = metadata["text"]
        if text.get("scheme") != SCHEME:
            raise ArtifactError(f"text hashing scheme {text.get('scheme')!r} is not this code's {SCHEME!r}")
        self._n_buckets = int(text["n_buckets"])
        self._max_tokens = int(text["max_tokens"])
        self._bigrams = bool(text.get("bigrams", True))
        self._char_ngrams = tuple(int(k) for k in text.get("char_ngrams", ()))

    @classmethod
    def load(cls, model_dir: str | Path, version: str | None = None, device: str = "auto",
             precision: str = "fp32", pinned: bool = False) -> "SpamModel":
        """Load ``<model_dir>/spam-ngram/<version>`` (latest by default); the cuda options
        default to the plain float32 path (``ops/bench_gpu.py`` measures them)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        art = load_artifact(Path(model_dir), cls.NAME, version)
        meta = art.metadata
        if meta.get("kind") != "spam":
            raise ArtifactError(f"{art.path} is not a spam model (kind={meta.get('kind')!r})")
        from feature_store.spam import SPAM_DENSE_FEATURES

        missing = [f for f in meta["dense_features"] if f not in SPAM_DENSE_FEATURES]
        if missing:
            raise ArtifactError(f"{art.path} needs dense features this code does not compute: {missing}")
        net = build_net(meta)
        state = {k: v for k, v in art.tensors.items()}
        missing = set(net.state_dict()) - set(state)
        if missing:
            raise ArtifactError(f"{art.path} lacks tensors {sorted(missing)}")
        net.load_state_dict(state, strict=True)
        return cls(net, meta, art.version, select_device(device), precision=precision, pinned=pinned)

    def tokens(self, email: Email) -> np.ndarray:
        """One email's ids (the reference hasher; the per-message path)."""
        return hash_email_text(email.subject, email.body, self._n_buckets, self._max_tokens,
                               bigrams=self._bigrams, char_ngrams=self._char_ngrams)

    def tokens_batch(self, emails: Sequence[Email]) -> TokenBatch:
        """Every email's ids at once, equal to ``tokens`` email by email, at a fraction of
        the cost: the batched hasher's fixed cost is per batch, not per email."""
        ids, offsets = hash_email_texts_flat([e.subject for e in emails], [e.body for e in emails],
                                             self._n_buckets, self._max_tokens,
                                             bigrams=self._bigrams, char_ngrams=self._char_ngrams)
        return TokenBatch(ids, offsets)

    def predict(self, token_ids: Sequence[np.ndarray] | TokenBatch, dense: np.ndarray) -> np.ndarray:
        """One float32 score in [0, 1] per email, the whole batch in one forward."""
        n = len(token_ids)
        dense = np.asarray(dense, dtype=np.float32).reshape(n, len(self.dense_features))
        if n == 0:
            return np.empty(0, dtype=np.float32)
        if isinstance(token_ids, TokenBatch):
            flat, offsets = token_ids.ids, token_ids.offsets
        else:
            flat, offsets = flatten(token_ids)
        if self.pinned:
            return self._predict_pinned(flat, offsets, np.ascontiguousarray(dense))
        with torch.inference_mode():
            ids_t = torch.from_numpy(flat).to(self.device)
            off_t = torch.from_numpy(offsets).to(self.device)
            dense_t = torch.from_numpy(np.ascontiguousarray(dense)).to(self.device)
            scores = torch.sigmoid(self.net(ids_t, off_t, dense_t))
            return scores.float().cpu().numpy()

    def _staging(self, name: str, n: int, dtype: torch.dtype, width: int = 0) -> torch.Tensor:
        """A reused pinned host buffer of at least ``n`` rows (grown to a power of two)."""
        buf = self._host.get(name)
        if buf is None or buf.shape[0] < n:
            cap = 1 << max(0, (n - 1).bit_length())
            buf = torch.empty((cap, width) if width else (cap,), dtype=dtype, pin_memory=True)
            self._host[name] = buf
        return buf[:n]

    def _predict_pinned(self, flat: np.ndarray, offsets: np.ndarray, dense: np.ndarray) -> np.ndarray:
        """cuda only: stage into reused pinned buffers, copy without blocking, wait once at the end."""
        n = offsets.shape[0]
        ids_h = self._staging("ids", max(1, flat.shape[0]), torch.int64)[: flat.shape[0]]
        off_h = self._staging("offsets", n, torch.int64)
        dense_h = self._staging("dense", n, torch.float32, dense.shape[1])
        out_h = self._staging("out", n, torch.float32)
        ids_h.copy_(torch.from_numpy(flat))
        off_h.copy_(torch.from_numpy(offsets))
        dense_h.copy_(torch.from_numpy(dense))
        with torch.inference_mode():
            ids_t = ids_h.to(self.device, non_blocking=True)
            off_t = off_h.to(self.device, non_blocking=True)
            dense_t = dense_h.to(self.device, non_blocking=True)
            scores = torch.sigmoid(self.net(ids_t, off_t, dense_t).float())
            out_h.copy_(scores, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
        return out_h.numpy().copy()  # the pinned buffer is reused by the next batch

    def close(self) -> None:
        self._host = {}
        self.net = None  # type: ignore[assignment]
