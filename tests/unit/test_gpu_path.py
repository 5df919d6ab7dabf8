"""The GPU-path options of the models, checked where no GPU is needed.

The cuda branches themselves (pinned staging, non-blocking copies, CUDA graphs,
bf16/fp16 kernels) are measured and checked by ``ops/bench_gpu.py`` on a GPU
machine; here: argument validation, that the cpu path stays bit-for-bit what it
was whatever the cuda options say, that the cuda-only machinery is chosen only
on a cuda device, and the pure helpers those branches rely on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_store.spam import SPAM_DENSE_FEATURES
from models.fraud_model import (
    PRECISIONS,
    FraudModel,
    PendingScores,
    build_mlp,
    check_graph_sizes,
    default_arch,
    graph_bucket,
    resolve_precision,
)
from models.spam_model import SpamModel
from tests.models_util import tiny_spam_net

ROOT = Path(__file__).resolve().parents[2]
F = 12  # the v1 feature list's width: models built here name FRAUD_FEATURES[:F] where that list is known


def _fraud_meta(seed: int = 0):
    from models.fraud_model import KNOWN_FEATURE_LISTS

    features = list(KNOWN_FEATURE_LISTS[-1])
    torch.manual_seed(seed)
    arch = default_arch(len(features), (16, 8))
    state = build_mlp(arch).state_dict()
    rng = np.random.default_rng(seed)
    meta = {
        "kind": "fraud", "model_name": FraudModel.NAME, "features": features,
        "normalisation": {"mean": rng.uniform(0, 50, len(features)).tolist(),
                          "std": rng.uniform(1, 30, len(features)).tolist()},
        "arch": arch, "thresholds": {"review": 0.4, "block": 0.8},
    }
    return state, meta


def _rows(n: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 300, size=(n, width)).astype(np.float32)


def _spam_model(seed: int = 0, **kw) -> SpamModel:
    net, meta = tiny_spam_net(seed)
    return SpamModel(net, meta, "mem", torch.device("cpu"), **kw)


def _spam_batch(n: int, seed: int = 2) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    toks = [rng.integers(0, 4096, int(rng.integers(0, 60))).astype(np.int64) for _ in range(n)]
    dense = rng.normal(0, 3, (n, len(SPAM_DENSE_FEATURES))).astype(np.float32)
    return toks, dense


# ---------------------------------------------------------------- validation


def test_precision_names_are_validated() -> None:
    state, meta = _fraud_meta()
    for bad in ("int8", "FP32", "", None, "float16"):
        with pytest.raises(ValueError, match="precision"):
            FraudModel(state, meta, device="cpu", precision=bad)
        with pytest.raises(ValueError, match="precision"):
            resolve_precision(bad, torch.device("cpu"))
    assert set(PRECISIONS) == {"fp32", "bf16", "fp16"}


def test_spam_load_validates_precision(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        SpamModel.load(tmp_path, device="cpu", precision="int4")  # checked before the artifact is read
    with pytest.raises(ValueError, match="precision"):
        _spam_model(precision="half")


def test_reduced_precision_applies_on_cuda_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    for p in PRECISIONS:
        assert resolve_precision(p, cpu) == "fp32"
        assert resolve_precision(p, cuda) == p


def test_graph_sizes_are_validated_and_sorted() -> None:
    assert check_graph_sizes(()) == ()
    assert check_graph_sizes(None) == ()
    assert check_graph_sizes([4096, 8, 256, 8]) == (8, 256, 4096)
    assert check_graph_sizes((np.int64(64),)) == (64,)
    for bad in ((0,), (-8,), ("8",), (True,), (2.0,)):
        with pytest.raises(ValueError, match="graph"):
            check_graph_sizes(bad)
    state, meta = _fraud_meta()
    with pytest.raises(ValueError, match="graph"):
        FraudModel(state, meta, device="cpu", cuda_graph_sizes=(0,))


def test_graph_bucket_picks_the_smallest_size_that_holds_the_batch() -> None:
    sizes = (8, 64, 256)
    assert graph_bucket(1, sizes) == 8
    assert graph_bucket(8, sizes) == 8
    assert graph_bucket(9, sizes) == 64
    assert graph_bucket(256, sizes) == 256
    assert graph_bucket(257, sizes) is None  # larger than every captured graph: eager
    assert graph_bucket(1, ()) is None


# ---------------------------------------------------------------- cpu path unchanged


def test_cpu_fraud_scores_are_bit_identical_whatever_the_cuda_options() -> None:
    state, meta = _fraud_meta()
    width = len(meta["features"])
    x = _rows(300, width)
    plain = FraudModel(state, meta, device="cpu")
    ref = plain.predict(x)
    # the float32 formula, written out: the fp32 forward is exactly this
    m = plain._module
    with torch.inference_mode():
        manual = torch.sigmoid(m.net((torch.from_numpy(x) - m.mean) * m.inv_std)).squeeze(-1).numpy()
    assert np.array_equal(ref, manual)
    # (cpu GEMM kernels round differently by batch size, so compare batch for batch)
    refs = {n: plain.predict(x[:n]) for n in (1, 7, 300)}
    for kw in ({"precision": "bf16"}, {"precision": "fp16", "pinned": True}, {"cuda_graph_sizes": (8, 256)},
               {"precision": "bf16", "pinned": True, "cuda_graph_sizes": (300,)}):
        other = FraudModel(state, meta, device="cpu", **kw)
        assert (other.precision, other.pinned, other.cuda_graph_sizes) == ("fp32", False, ())
        assert other._cuda is None
        assert next(other._module.net.parameters()).dtype == torch.float32
        for n, r in refs.items():
            out = other.predict(x[:n])
            assert out.dtype == np.float32 and np.array_equal(out, r)


def test_cpu_spam_scores_are_bit_identical_whatever_the_cuda_options() -> None:
    toks, dense = _spam_batch(40)
    ref = _spam_model().predict(toks, dense)
    for kw in ({"precision": "bf16"}, {"precision": "fp16", "pinned": True}, {"pinned": True}):
        m = _spam_model(**kw)
        assert (m.precision, m.pinned) == ("fp32", False)
        assert m.net.embedding.weight.dtype == torch.float32
        out = m.predict(toks, dense)
        assert out.dtype == np.float32 and np.array_equal(out, ref)
        assert m._host == {}  # no pinned staging on cpu


def test_predict_async_on_cpu_is_predict() -> None:
    state, meta = _fraud_meta()
    model = FraudModel(state, meta, device="cpu", pinned=True)
    x = _rows(65, len(meta["features"]))
    pending = model.predict_async(x)
    assert isinstance(pending, PendingScores) and pending.done()
    assert np.array_equal(pending.result(), model.predict(x))
    assert model.predict_async(x[:0]).result().shape == (0,)
    with pytest.raises(ValueError):
        model.predict_async(x[:, :3])
    model.close()
    with pytest.raises(RuntimeError, match="closed"):
        model.predict_async(x)


def test_cuda_machinery_is_chosen_only_on_a_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state, meta = _fraud_meta()
    auto = FraudModel(state, meta, device="auto", precision="fp16", pinned=True, cuda_graph_sizes=(64,))
    assert auto.device.type == "cpu" and auto._cuda is None
    assert (auto.precision, auto.pinned, auto.cuda_graph_sizes) == ("fp32", False, ())
    with pytest.raises(RuntimeError, match="cuda"):
        FraudModel(state, meta, device="cuda", pinned=True)


# ---------------------------------------------------------------- reduced precision, emulated on cpu


def test_reduced_precision_casts_only_the_weights_and_returns_float32() -> None:
    state, meta = _fraud_meta()
    model = FraudModel(state, meta, device="cpu")
    x = _rows(50, len(meta["features"]))
    ref = model.predict(x)
    model._module.set_dtype(torch.bfloat16)  # what precision="bf16" does on cuda
    assert model._module.mean.dtype == torch.float32 and model._module.inv_std.dtype == torch.float32
    out = model.predict(x)
    assert out.dtype == np.float32
    assert np.max(np.abs(out - ref)) < 0.1 and not np.array_equal(out, ref)

    spam = _spam_model()
    toks, dense = _spam_batch(30)
    sref = spam.predict(toks, dense)
    spam.net.set_dtype(torch.float16)
    assert spam.net.mean.dtype == torch.float32 and spam.net.std.dtype == torch.float32
    assert spam.net.fc1.weight.dtype == torch.float16
    sout = spam.predict(toks, dense)
    assert sout.dtype == np.float32 and np.max(np.abs(sout - sref)) < 0.05


# ---------------------------------------------------------------- the bench's helpers


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "ops" / "bench_gpu.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_padded_spam_batches_score_like_unpadded_ones() -> None:
    """The CUDA-graph experiment's padding (spare bags, one bag soaking up the token tail)."""
    bench = _bench()
    model = _spam_model()
    for n, budget in ((1, 64), (5, 512), (16, 4096)):
        toks, dense = _spam_batch(n, seed=n)
        padded = bench.SpamGraph(model.net, 16, budget, dense.shape[1], "cpu")
        padded.ids_h.random_(0, 4096)  # stale ids in the padding must not matter
        assert padded.fits(n, sum(len(t) for t in toks))
        np.testing.assert_allclose(padded.predict(toks, dense), model.predict(toks, dense), rtol=0, atol=1e-6)


def test_action_flip_count() -> None:
    bench = _bench()
    th = {"review": 0.4, "block": 0.8}
    a = np.array([0.1, 0.39, 0.41, 0.79, 0.81], dtype=np.float32)
    b = np.array([0.1, 0.41, 0.41, 0.81, 0.81], dtype=np.float32)
    assert bench._flips(a, a, th) == 0
    assert bench._flips(a, b, th) == 2
