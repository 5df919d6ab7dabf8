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

import feature_store.fraud as _fraud_features
from feature_store.fraud import FRAUD_FEATURES
from models.artifacts import Artifact, ArtifactError, load_artifact
from models.runtime import select_device

#: Feature lists a loadable artifact may name: this code's, and the 12-feature list of
#: fraud-mlp versions 1-2 where feature_store.fraud still defines it (a prefix of the
#: current one). ``predict`` takes rows of the artifact's own width (``len(model.features)``).
KNOWN_FEATURE_LISTS: tuple[tuple[str, ...], ...] = tuple(
    {FRAUD_FEATURES: None, tuple(getattr(_fraud_features, "FRAUD_FEATURES_V1", FRAUD_FEATURES)): None}
)

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


#: ``precision`` names accepted by the model loaders, and the weight dtype of each.
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a model will run at: reduced precision applies on cuda only.

    Unknown names raise ``ValueError``; on a non-cuda device every precision runs
    as ``fp32``, so a cpu host (``STREAMINFER_DEVICE=auto`` without a GPU) keeps the
    exact float32 results whatever was asked for the GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return precision if device.type == "cuda" else "fp32"


def graph_bucket(n: int, sizes: tuple[int, ...]) -> int | None:
    """The smallest captured batch size that holds ``n`` rows (``sizes`` ascending), else None."""
    for s in sizes:
        if s >= n:
            return s
    return None


def check_graph_sizes(sizes: Any) -> tuple[int, ...]:
    """Validated, sorted, de-duplicated CUDA-graph batch sizes (each a positive int)."""
    out = []
    for s in sizes or ():
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) <= 0:
            raise ValueError(f"cuda graph batch sizes must be positive ints, got {s!r}")
        out.append(int(s))
    return tuple(sorted(set(out)))


class _Scorer(nn.Module):
    """Normalise, run the MLP, squash to a probability; one score per row.

    Normalisation and the sigmoid stay in float32; with reduced precision only the
    MLP's weights and activations are bf16/fp16 (``set_dtype``).
    """

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)
        self.dtype = torch.float32

    def set_dtype(self, dtype: torch.dtype) -> "_Scorer":
        self.net.to(dtype)
        self.dtype = dtype
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is torch.float32:  # the exact float32 graph, unchanged
            return torch.sigmoid(self.net((x - self.mean) * self.inv_std)).squeeze(-1)
        z = ((x - self.mean) * self.inv_std).to(self.dtype)
        return torch.sigmoid(self.net(z).float()).squeeze(-1)


class _CudaRunner:
    """The cuda side of :meth:`FraudModel.predict`: reused pinned host buffers,
    non-blocking copies and optional CUDA graphs captured at fixed batch sizes.

    A batch of ``n`` rows runs in the graph of the smallest captured size ``>= n``
    (its input padded; rows are independent in an MLP, so padding rows never touch
    the real rows' scores), or eagerly when larger than every captured size. One
    runner serves one thread: buffers are reused, so a batch must be finished
    (``PendingScores.result``) before the next one starts, which ``submit`` ensures.
    """

    def __init__(self, module: _Scorer, n_features: int, device: torch.device, pinned: bool,
                 graph_sizes: tuple[int, ...]) -> None:
        self.module = module
        self.n = n_features
        self.device = device
        self.pinned = pinned
        self.graph_sizes = graph_sizes
        self._in_host: torch.Tensor | None = None
        self._out_host: torch.Tensor | None = None
        self._pending: "PendingScores | None" = None
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        for size in graph_sizes:
            self._graphs[size] = self._capture(size)

    def _capture(self, size: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            static_in = torch.zeros((size, self.n), dtype=torch.float32, device=self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the capture (cuBLAS handles, workspaces)
                    self.module(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            torch.cuda.synchronize(self.device)
        return graph, static_in, static_out

    def _host(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._in_host is None or self._in_host.shape[0] < n:
            cap = 1 << max(0, (n - 1).bit_length())
            self._in_host = torch.empty((cap, self.n), dtype=torch.float32, pin_memory=True)
            self._out_host = torch.empty(cap, dtype=torch.float32, pin_memory=True)
        assert self._out_host is not None
        return self._in_host[:n], self._out_host[:n]

    def submit(self, x: np.ndarray) -> "PendingScores":
        if self._pending is not None:
            self._pending.wait()
        n = x.shape[0]
        src = torch.from_numpy(x)
        out_host = None
        if self.pinned:
            in_host, out_host = self._host(n)
            in_host.copy_(src)
            src = in_host
        with torch.inference_mode():
            size = graph_bucket(n, self.graph_sizes)
            if size is not None:
                graph, static_in, static_out = self._graphs[size]
                static_in[:n].copy_(src, non_blocking=self.pinned)
                graph.replay()
                out = static_out[:n]
            else:
                out = self.module(src.to(self.device, non_blocking=self.pinned))
            if out_host is not None:
                out_host.copy_(out, non_blocking=True)
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
                pending = PendingScores(host=out_host, event=event, runner=self)
            else:
                pending = PendingScores(value=out.to("cpu").numpy().astype(np.float32, copy=False).reshape(-1))
        self._pending = pending if out_host is not None else None
        return pending


class PendingScores:
    """Scores of a submitted batch; ``result()`` waits for them (cuda) or returns them (cpu)."""

    __slots__ = ("_value", "_host", "_event", "_runner")

    def __init__(self, value: np.ndarray | None = None, host: torch.Tensor | None = None, event: Any = None,
                 runner: _CudaRunner | None = None) -> None:
        self._value = value
        self._host = host
        self._event = event
        self._runner = runner

    def wait(self) -> None:
        if self._value is None:
            assert self._host is not None and self._event is not None
            self._event.synchronize()
            self._value = self._host.numpy().copy()  # the pinned buffer is reused by the next batch
            self._host = self._event = None
            if self._runner is not None and self._runner._pending is self:
                self._runner._pending = None
            self._runner = None

    def done(self) -> bool:
        return self._value is not None or bool(self._event is not None and self._event.query())

    def result(self) -> np.ndarray:
        self.wait()
        assert self._value is not None
        return self._value


def safe_std(std: np.ndarray) -> np.ndarray:
    """Standard deviations with (near-)constant features mapped to 1."""
    std = np.asarray(std, dtype=np.float32).copy()
    std[~np.isfinite(std) | (std < 1e-6)] = 1.0
    return std


class FraudModel:
    """A loaded fraud model version, ready to score batches of feature rows."""

    NAME = "fraud-mlp"

    def __init__(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], device: str = "auto",
                 precision: str = "fp32", pinned: bool = False, cuda_graph_sizes: Any = ()) -> None:
        """``precision``, ``pinned`` and ``cuda_graph_sizes`` only act on cuda (see
        :func:`resolve_precision` and :class:`_CudaRunner`); on cpu the model runs the
        exact float32 path whatever they say. Their effective values are the
        attributes of the same names."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        graph_sizes = check_graph_sizes(cuda_graph_sizes)
        meta = dict(metadata)
        if meta.get("kind", "fraud") != "fraud":
            raise ArtifactError(f"artifact kind is {meta.get('kind')!r}, not 'fraud'")
        features = tuple(meta.get("features") or ())
        if features not in KNOWN_FEATURE_LISTS:
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
        on_cuda = self.device.type == "cuda"
        self.precision = resolve_precision(precision, self.device)
        self.pinned = bool(pinned) and on_cuda
        self.cuda_graph_sizes = graph_sizes if on_cuda else ()
        if self.precision != "fp32":
            self._module.set_dtype(PRECISIONS[self.precision])
        self._cuda: _CudaRunner | None = None
        if on_cuda:
            self._cuda = _CudaRunner(self._module, self._n, self.device, self.pinned, self.cuda_graph_sizes)

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: str = "auto", **gpu_options: Any) -> "FraudModel":
        return cls(artifact.tensors, artifact.metadata, device, **gpu_options)

    @classmethod
    def load(cls, model_dir: str | Path, version: str | None = None, device: str = "auto",
             precision: str = "fp32", pinned: bool = False, cuda_graph_sizes: Any = ()) -> "FraudModel":
        """Load ``<model_dir>/fraud-mlp/<version>`` (the latest by default).

        The cuda options (``precision``, ``pinned``, ``cuda_graph_sizes``) default to
        the plain float32 path; ``ops/bench_gpu.py`` measures what each buys.
        """
        return cls.from_artifact(load_artifact(Path(model_dir), cls.NAME, version), device,
                                 precision=precision, pinned=pinned, cuda_graph_sizes=cuda_graph_sizes)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        if self._module is None:
            raise RuntimeError("FraudModel is closed")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._n:
            raise ValueError(f"expected feature rows of shape [n, {self._n}], got {list(x.shape)}")
        return np.ascontiguousarray(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for raw feature rows ``[n, F]`` (float32, one per row)."""
        x = self._rows(x)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if self._cuda is not None:
            return self._cuda.submit(x).result()
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self.device.type != "cpu":
                t = t.to(self.device, non_blocking=False)
            out = self._module(t)
            return out.to("cpu").numpy().astype(np.float32, copy=False).reshape(-1)

    def predict_async(self, x: np.ndarray) -> PendingScores:
        """Start scoring a batch and return at once; ``.result()`` gives ``predict(x)``.

        On cuda with ``pinned`` the copies and kernels run while the caller works
        (e.g. computes the next batch's features); starting another batch first
        waits for this one. Elsewhere the scores are computed before returning.
        """
        x = self._rows(x)
        if x.shape[0] and self._cuda is not None:
            return self._cuda.submit(x)
        return PendingScores(value=self.predict(x))

    def action(self, score: float) -> str:
        """``block`` if score >= block threshold, else ``review`` if >= review, else ``allow``."""
        if score >= self.thresholds["block"]:
            return "block"
        if score >= self.thresholds["review"]:
            return "review"
        return "allow"

    def close(self) -> None:
        self._module = None  # type: ignore[assignment]
        self._cuda = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
