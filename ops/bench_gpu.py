#!/usr/bin/env python3
"""GPU vs CPU: model microbench, reduced-precision accuracy, and the worker's GPU stages.

Two steps (issue 5, part 4):

    .venv/bin/python ops/bench_gpu.py --prepare            # here: record the inputs into .gpu_carry/
    python3 ops/bench_gpu.py --out DIR [--data .gpu_carry] # here (cpu) or on a GPU machine

``--prepare`` copies the latest fraud-mlp and spam-ngram versions and records (a) the
fraud test split's feature rows and labels (regenerated from the artifact metadata
with ``models.train_fraud.build_features``, the serving feature code), (b) raw
transaction events as JSON lines (a warm-up slice, then the first timed events of
the test window), (c) the spam test split's token ids, dense rows and labels
(``models.train_spam.prepare``, the serving feature code), and (d) the spam test
emails as raw JSON events. Kafka and Redis do not run on the GPU machine: the
end-to-end part feeds batches from these recordings with in-memory windows.

The bench imports only numpy, torch, safetensors, orjson and this repository's
model / feature / decision modules (no confluent_kafka, no redis). It writes
``DIR/gpu_bench.json`` and ``DIR/gpu_bench.md``; progress goes to stderr and the
last stdout line is one JSON summary object.

Timing: latency per batch is host wall time around the model's ``predict`` call
(the copies in and out and the synchronisation included: what a worker waits for),
after warm-up, over rotating input sets drawn from the test data, median and p99.
On cuda, ``kernel_ms`` is the device-only forward time from CUDA events.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

FRAUD_BATCHES = (1, 8, 64, 256, 1024, 4096)
SPAM_BATCHES = (1, 16, 64, 256, 1024)
E2E_BATCHES = (256, 1024, 4096)
#: Reduced precision "holds" only if every test metric moves by at most this much...
METRIC_TOL = 1e-4
#: ...and fewer than this fraction of test rows change action (threshold decisions).
FLIP_TOL = 0.001
WARM_EVENTS = 30_000
TIMED_EVENTS = 100_000
SPAM_E2E_EVENTS = 8192


def log(msg: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ prepare


def _latest(model_dir: Path, name: str) -> Path:
    from models.artifacts import latest_version

    v = latest_version(model_dir, name)
    if v is None:
        raise SystemExit(f"no {name} version under {model_dir}: train first (streaminfer train ...)")
    return model_dir / name / str(v)


def prepare(data: Path, model_dir: Path, corpus: Path) -> None:
    import orjson

    from models.corpus import load_corpus
    from models.fraud_sim import SimConfig, generate
    from models.spam_model import SpamModel
    from models.train_fraud import build_features
    from models.train_spam import prepare as spam_prepare

    data.mkdir(parents=True, exist_ok=True)
    arts = data / "artifacts"
    if arts.exists():
        shutil.rmtree(arts)
    for name in ("fraud-mlp", "spam-ngram"):
        src = _latest(model_dir, name)
        shutil.copytree(src, arts / name / src.name)
        log(f"copied {src}")

    # fraud: test split rows + labels, and raw events around the start of the test window
    meta = json.loads((_latest(model_dir, "fraud-mlp") / "metadata.json").read_text())
    t0 = time.perf_counter()
    sim = generate(SimConfig.from_dict(meta["training_data"]["config"]))
    if sim.fingerprint() != meta["training_data"]["fingerprint"]:
        raise SystemExit("regenerated fraud data does not match the artifact's fingerprint")
    ids = meta["test_set"]["ids"]
    rows = np.fromiter((int(i.removeprefix("tx-")) for i in ids), dtype=np.int64, count=len(ids))
    X = build_features(sim, log)
    width = len(meta["features"])
    np.savez_compressed(data / "fraud_test.npz", X=np.ascontiguousarray(X[rows][:, :width]),
                        y=sim.is_fraud[rows].astype(np.uint8))
    first = int(rows.min())
    lo = max(0, first - WARM_EVENTS)
    with gzip.open(data / "fraud_events.jsonl.gz", "wb", compresslevel=6) as f:
        for ev in sim.events(lo, first + TIMED_EVENTS):
            f.write(orjson.dumps(ev) + b"\n")
    (data / "fraud_events.json").write_text(json.dumps({"warm": first - lo, "timed": TIMED_EVENTS,
                                                        "first_test_row": first}))
    log(f"fraud: {rows.size:,} test rows, {first - lo + TIMED_EVENTS:,} events ({time.perf_counter() - t0:.0f}s)")

    # spam: test tokens/dense/labels through the serving feature code, and the raw test emails
    t0 = time.perf_counter()
    smeta = json.loads((_latest(model_dir, "spam-ngram") / "metadata.json").read_text())
    model = SpamModel.load(model_dir, version=_latest(model_dir, "spam-ngram").name, device="cpu")
    prep = spam_prepare(corpus)
    index = {n: i for i, n in enumerate(prep.names)}
    te = np.array([index[n] for n in smeta["test_set"]["ids"]], dtype=np.int64)
    toks = [model.tokens(prep.events[i]) for i in te]
    lengths = np.array([len(t) for t in toks], dtype=np.int64)
    np.savez_compressed(data / "spam_test.npz", flat=np.concatenate(toks).astype(np.int32), lengths=lengths,
                        dense=prep.dense[te], y=prep.labels[te].astype(np.uint8))
    msgs = load_corpus(corpus, names=smeta["test_set"]["ids"])
    with gzip.open(data / "spam_events.jsonl.gz", "wb", compresslevel=6) as f:
        for m in msgs:
            f.write(orjson.dumps(m.event) + b"\n")
    log(f"spam: {te.size:,} test emails ({time.perf_counter() - t0:.0f}s)")
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    log(f"recorded into {data} ({total / 2**20:.1f} MiB)")


# ------------------------------------------------------------------------------------------ helpers


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fn: Callable[[Any], Any], inputs: list[Any], dev: str, rows: int, warm: int = 10,
               min_reps: int = 30, max_reps: int = 400, budget_s: float = 0.8) -> dict[str, float]:
    """Host wall time per call (fn returns host results, i.e. it synchronises itself)."""
    for i in range(warm):
        fn(inputs[i % len(inputs)])
    _sync(dev)
    ts: list[float] = []
    end = time.perf_counter() + budget_s
    i = 0
    while len(ts) < max_reps and (len(ts) < min_reps or time.perf_counter() < end):
        x = inputs[i % len(inputs)]
        i += 1
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    a = np.asarray(ts)
    med = float(np.median(a))
    return {"median_ms": med * 1e3, "p99_ms": float(np.percentile(a, 99)) * 1e3, "reps": len(ts),
            "rows_per_s": rows / med if med > 0 else float("inf")}


def cuda_event_ms(fn: Callable[[], Any], reps: int = 100, warm: int = 10) -> float:
    """Median device time of ``fn`` (launches only, no host copies) from CUDA events."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "cpu_model": None, "cuda": torch.cuda.is_available(), "gpu": None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "multiprocessors": p.multi_processor_count, "capability": f"{p.major}.{p.minor}",
                        "cuda_runtime": torch.version.cuda}
    return facts


class Data:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.model_dir = root / "artifacts"
        f = np.load(root / "fraud_test.npz")
        self.fX, self.fy = f["X"].astype(np.float32), f["y"].astype(np.int64)
        s = np.load(root / "spam_test.npz")
        lengths = s["lengths"]
        flat = s["flat"].astype(np.int64)
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        self.stoks = [flat[bounds[i]:bounds[i + 1]] for i in range(len(lengths))]
        self.sdense, self.sy = s["dense"].astype(np.float32), s["y"].astype(np.int64)
        with gzip.open(root / "fraud_events.jsonl.gz", "rb") as fh:
            self.fevents = fh.read().splitlines()
        self.fmeta = json.loads((root / "fraud_events.json").read_text())
        with gzip.open(root / "spam_events.jsonl.gz", "rb") as fh:
            self.sevents = fh.read().splitlines()


def fraud_variants(cuda: bool) -> list[tuple[str, str, dict[str, Any]]]:
    v = [("cpu_fp32", "cpu", {})]
    if cuda:
        g = {"cuda_graph_sizes": FRAUD_BATCHES}
        v += [("cuda_fp32", "cuda", {}),
              ("cuda_fp32_pinned", "cuda", {"pinned": True}),
              ("cuda_bf16_pinned", "cuda", {"pinned": True, "precision": "bf16"}),
              ("cuda_fp16_pinned", "cuda", {"pinned": True, "precision": "fp16"}),
              ("cuda_fp32_pinned_graphs", "cuda", {"pinned": True, **g}),
              ("cuda_bf16_pinned_graphs", "cuda", {"pinned": True, "precision": "bf16", **g})]
    return v


def spam_variants(cuda: bool) -> list[tuple[str, str, dict[str, Any]]]:
    v = [("cpu_fp32", "cpu", {})]
    if cuda:
        v += [("cuda_fp32", "cuda", {}),
              ("cuda_fp32_pinned", "cuda", {"pinned": True}),
              ("cuda_bf16_pinned", "cuda", {"pinned": True, "precision": "bf16"}),
              ("cuda_fp16_pinned", "cuda", {"pinned": True, "precision": "fp16"})]
    return v


# ------------------------------------------------------------------------------------------ spam graph (experiment)


class SpamGraph:
    """Experimental CUDA graph for the spam net at a fixed (bags, token budget) shape.

    EmbeddingBag with offsets puts every token from the last offset to the end of
    the input into the last bag, so padding works with one spare bag: real bags
    ``0..n-1``, bags ``n..B-1`` start at the real token count (empty: mean gives 0),
    and bag ``B`` takes the padding tokens (stale, valid ids). Its scores are dropped.
    A batch over the budget runs eagerly. Not in ``SpamModel``: measured here first.
    """

    def __init__(self, net: Any, bags: int, tokens: int, n_dense: int, device: str) -> None:
        self.bags, self.tokens, self.device = bags, tokens, device
        self.ids = torch.zeros(tokens, dtype=torch.int64, device=device)
        self.off = torch.zeros(bags + 1, dtype=torch.int64, device=device)
        self.dense = torch.zeros((bags + 1, n_dense), dtype=torch.float32, device=device)
        self.ids_h = torch.zeros(tokens, dtype=torch.int64, pin_memory=(device != "cpu"))
        self.off_h = torch.zeros(bags + 1, dtype=torch.int64, pin_memory=(device != "cpu"))
        self.dense_h = torch.zeros((bags + 1, n_dense), dtype=torch.float32, pin_memory=(device != "cpu"))
        self.out_h = torch.zeros(bags + 1, dtype=torch.float32, pin_memory=(device != "cpu"))
        self.net = net
        self.graph = None
        if device != "cpu":
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        self._forward()
                torch.cuda.current_stream().wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.out = self._forward()
                torch.cuda.synchronize()

    def _forward(self) -> torch.Tensor:
        return torch.sigmoid(self.net(self.ids, self.off, self.dense).float())

    def fits(self, n: int, t: int) -> bool:
        return n <= self.bags and t <= self.tokens

    def predict(self, token_ids: list[np.ndarray], dense: np.ndarray) -> np.ndarray:
        from models.spam_model import flatten

        flat, offsets = flatten(token_ids)
        n, t = len(token_ids), flat.shape[0]
        self.ids_h[:t].copy_(torch.from_numpy(flat))
        self.off_h[:n].copy_(torch.from_numpy(offsets))
        self.off_h[n:] = t
        self.dense_h[:n].copy_(torch.from_numpy(dense))
        with torch.inference_mode():
            if self.graph is None:  # cpu self-check of the padding scheme
                self.ids.copy_(self.ids_h)
                self.off.copy_(self.off_h)
                self.dense.copy_(self.dense_h)
                return self._forward()[:n].numpy().copy()
            self.ids[:t].copy_(self.ids_h[:t], non_blocking=True)
            self.off.copy_(self.off_h, non_blocking=True)
            self.dense[:n].copy_(self.dense_h[:n], non_blocking=True)
            self.graph.replay()
            self.out_h[:n].copy_(self.out[:n], non_blocking=True)
            torch.cuda.current_stream().synchronize()
        return self.out_h[:n].numpy().copy()


# ------------------------------------------------------------------------------------------ a. microbench


def micro_fraud(d: Data, cuda: bool, quick: bool) -> dict[str, Any]:
    from models.fraud_model import FraudModel

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for label, dev, kw in fraud_variants(cuda):
        model = FraudModel.load(d.model_dir, device=dev, **kw)
        res: dict[str, Any] = {}
        for b in FRAUD_BATCHES:
            sets = [np.ascontiguousarray(d.fX[rng.integers(0, len(d.fX), b)]) for _ in range(8)]
            r = time_calls(model.predict, sets, dev, b, budget_s=0.3 if quick else 0.8)
            if dev == "cuda":
                xd = torch.from_numpy(sets[0]).to("cuda")
                runner = model._cuda
                size = None if runner is None else next((s for s in runner.graph_sizes if s >= b), None)
                with torch.inference_mode():
                    if size is not None:
                        g = runner._graphs[size][0]
                        r["kernel_ms"] = cuda_event_ms(g.replay)
                    else:
                        r["kernel_ms"] = cuda_event_ms(lambda: model._module(xd))
            res[str(b)] = r
            log(f"fraud {label:26s} b={b:5d} median {r['median_ms']:.4f} ms p99 {r['p99_ms']:.4f} ms "
                f"{r['rows_per_s']:,.0f} rows/s")
        out[label] = res
        model.close()
    return out


def micro_spam(d: Data, cuda: bool, quick: bool) -> dict[str, Any]:
    from models.spam_model import SpamModel

    rng = np.random.default_rng(1)
    n = len(d.stoks)
    out: dict[str, Any] = {}
    sets_by_b = {}
    for b in SPAM_BATCHES:
        sets = []
        for _ in range(6):
            idx = rng.integers(0, n, b)
            sets.append(([d.stoks[i] for i in idx], np.ascontiguousarray(d.sdense[idx])))
        sets_by_b[b] = sets
    for label, dev, kw in spam_variants(cuda):
        model = SpamModel.load(d.model_dir, device=dev, **kw)
        res = {}
        for b in SPAM_BATCHES:
            r = time_calls(lambda s: model.predict(*s), sets_by_b[b], dev, b, budget_s=0.3 if quick else 0.8)
            res[str(b)] = r
            log(f"spam  {label:26s} b={b:5d} median {r['median_ms']:.4f} ms p99 {r['p99_ms']:.4f} ms "
                f"{r['rows_per_s']:,.0f} rows/s")
        out[label] = res
        model.close()

    # padded CUDA graph experiment (on cpu: only the padding scheme's self-check)
    dev = "cuda" if cuda else "cpu"
    model = SpamModel.load(d.model_dir, device=dev, pinned=cuda)
    ref = SpamModel.load(d.model_dir, device=dev)
    res = {}
    for b in SPAM_BATCHES:
        sets = sets_by_b[b]
        budget = max(sum(len(t) for t in s[0]) for s in sets)
        budget = 1 << max(0, (budget - 1).bit_length())  # a power-of-two token budget per bag count
        sg = SpamGraph(model.net, b, budget, d.sdense.shape[1], dev)
        diff = max(float(np.max(np.abs(sg.predict(*s) - ref.predict(*s)))) for s in sets)
        r: dict[str, Any] = {"token_budget": budget, "max_abs_diff_vs_eager_fp32": diff}
        if cuda:
            r.update(time_calls(lambda s: sg.predict(*s), sets, dev, b, budget_s=0.3 if quick else 0.8))
            r["kernel_ms"] = cuda_event_ms(sg.graph.replay)
            log(f"spam  cuda_fp32_graph_padded     b={b:5d} median {r['median_ms']:.4f} ms "
                f"{r['rows_per_s']:,.0f} rows/s (budget {budget} tokens, diff {diff:.2e})")
        res[str(b)] = r
    out["cuda_fp32_graph_padded" if cuda else "padding_selfcheck_cpu"] = res
    return out


# ------------------------------------------------------------------------------------------ b. accuracy


def _flips(a: np.ndarray, b: np.ndarray, thresholds: dict[str, float]) -> int:
    def level(s: np.ndarray) -> np.ndarray:
        lv = np.zeros(s.shape, dtype=np.int8)
        for i, t in enumerate(sorted(thresholds.values())):
            lv[s >= np.float32(t)] = i + 1
        return lv
    return int(np.sum(level(a) != level(b)))


def accuracy(d: Data, cuda: bool) -> dict[str, Any]:
    from models.fraud_model import PRECISIONS, FraudModel
    from models.spam_model import SpamModel
    from models.train_fraud import average_precision, roc_auc
    from models.train_spam import metrics_for

    out: dict[str, Any] = {"rule": (f"a precision mode holds iff every test metric (fraud: ROC AUC, average precision; "
                                    f"spam: ROC AUC, spam recall and ham FPR at the quarantine and reject thresholds, "
                                    f"recall at 0.1% FPR) is within {METRIC_TOL:g} of fp32 on the same device, and fewer than "
                                    f"{FLIP_TOL:.1%} of test rows change action"),
                           "fraud": {}, "spam": {}}
    # fraud
    def fraud_scores(model: Any, chunk: int = 4096) -> np.ndarray:
        return np.concatenate([model.predict(d.fX[a:a + chunk]) for a in range(0, len(d.fX), chunk)])

    def fraud_metrics(s: np.ndarray) -> dict[str, float]:
        return {"roc_auc": roc_auc(d.fy, s), "average_precision": average_precision(d.fy, s)}

    cpu = FraudModel.load(d.model_dir, device="cpu")
    th = cpu.thresholds
    base = fraud_scores(cpu)
    modes: dict[str, np.ndarray] = {"cpu_fp32": base}
    if cuda:
        for label, kw in (("cuda_fp32", {}), ("cuda_bf16", {"precision": "bf16"}), ("cuda_fp16", {"precision": "fp16"}),
                          ("cuda_fp32_graphs", {"pinned": True, "cuda_graph_sizes": (4096,)}),
                          ("cuda_bf16_graphs", {"pinned": True, "precision": "bf16", "cuda_graph_sizes": (4096,)})):
            m = FraudModel.load(d.model_dir, device="cuda", **kw)
            modes[label] = fraud_scores(m)
            m.close()
    else:  # indicative only: the same weight/activation rounding, cpu kernels
        for p in ("bf16", "fp16"):
            m = FraudModel.load(d.model_dir, device="cpu")
            m._module = copy.deepcopy(m._module).set_dtype(PRECISIONS[p])
            modes[f"cpu_emulated_{p}"] = fraud_scores(m)
    fm = {k: fraud_metrics(v) for k, v in modes.items()}
    ref_of = lambda k: "cuda_fp32" if k.startswith("cuda") else "cpu_fp32"  # noqa: E731
    for k, s in modes.items():
        r = ref_of(k)
        e: dict[str, Any] = dict(fm[k], n=int(len(s)), n_fraud=int(d.fy.sum()), reference=r,
                                 max_abs_diff=float(np.max(np.abs(s - modes[r]))),
                                 max_abs_diff_vs_cpu_fp32=float(np.max(np.abs(s - base))),
                                 action_flips=_flips(s, modes[r], th))
        e["delta_roc_auc"] = e["roc_auc"] - fm[r]["roc_auc"]
        e["delta_average_precision"] = e["average_precision"] - fm[r]["average_precision"]
        e["flip_fraction"] = e["action_flips"] / max(1, len(s))
        e["holds"] = bool(abs(e["delta_roc_auc"]) <= METRIC_TOL and abs(e["delta_average_precision"]) <= METRIC_TOL
                          and e["flip_fraction"] < FLIP_TOL)
        out["fraud"][k] = e
        log(f"accuracy fraud {k:18s} auc {e['roc_auc']:.6f} ap {e['average_precision']:.6f} "
            f"max|d| {e['max_abs_diff']:.2e} flips {e['action_flips']} holds={e['holds']}")

    # spam
    def spam_scores(model: Any, chunk: int = 512) -> np.ndarray:
        return np.concatenate([model.predict(d.stoks[a:a + chunk], d.sdense[a:a + chunk])
                               for a in range(0, len(d.stoks), chunk)])

    scpu = SpamModel.load(d.model_dir, device="cpu")
    sth = scpu.thresholds
    sbase = spam_scores(scpu)
    smodes: dict[str, np.ndarray] = {"cpu_fp32": sbase}
    if cuda:
        for label, kw in (("cuda_fp32", {}), ("cuda_bf16", {"precision": "bf16"}), ("cuda_fp16", {"precision": "fp16"})):
            m = SpamModel.load(d.model_dir, device="cuda", **kw)
            smodes[label] = spam_scores(m)
            m.close()
    else:
        for p in ("bf16", "fp16"):
            m = SpamModel.load(d.model_dir, device="cpu")
            m.net.set_dtype(PRECISIONS[p])
            smodes[f"cpu_emulated_{p}"] = spam_scores(m)

    def spam_metrics(s: np.ndarray) -> dict[str, float]:
        m = metrics_for(d.sy, s, sth)
        return {"roc_auc": m["roc_auc"], "quarantine_recall": m["quarantine"]["spam_recall"],
                "reject_recall": m["reject"]["spam_recall"], "recall_at_0.1pct_fpr": m["recall_at_0.1pct_fpr"],
                "quarantine_fpr": m["quarantine"]["ham_fpr"], "reject_fpr": m["reject"]["ham_fpr"]}

    sm = {k: spam_metrics(v) for k, v in smodes.items()}
    for k, s in smodes.items():
        r = ref_of(k)
        e = dict(sm[k], n=int(len(s)), reference=r, max_abs_diff=float(np.max(np.abs(s - smodes[r]))),
                 max_abs_diff_vs_cpu_fp32=float(np.max(np.abs(s - sbase))), action_flips=_flips(s, smodes[r], sth))
        deltas = {f"delta_{m}": sm[k][m] - sm[r][m] for m in sm[k]}
        e.update(deltas)
        e["flip_fraction"] = e["action_flips"] / max(1, len(s))
        e["holds"] = bool(all(abs(v) <= METRIC_TOL for v in deltas.values()) and e["flip_fraction"] < FLIP_TOL)
        out["spam"][k] = e
        log(f"accuracy spam  {k:18s} auc {e['roc_auc']:.6f} reject recall {e['reject_recall']:.4f} "
            f"max|d| {e['max_abs_diff']:.2e} flips {e['action_flips']} holds={e['holds']}")
    return out


# ------------------------------------------------------------------------------------------ c. end to end


def _new_stages() -> dict[str, float]:
    return {"decode": 0.0, "features": 0.0, "tokens": 0.0, "model": 0.0, "decide": 0.0}


def e2e_fraud(d: Data, dev: str, kw: dict[str, Any], batch: int, overlap: bool) -> dict[str, Any]:
    """decode -> features (in-memory windows, serving functions) -> model -> actions + decision JSON."""
    import orjson

    from feature_store.fraud import FRAUD_FEATURES, apply_transaction, fraud_features
    from feature_store.windows import DayWindows
    from models.fraud_model import FraudModel
    from streams.decisions import action_for, build_decision, reasons_for
    from streams.events import decode_transaction

    model = FraudModel.load(d.model_dir, device=dev, **kw)
    width = len(model.features)
    full = len(FRAUD_FEATURES)
    cards: dict[str, DayWindows] = {}
    terms: dict[str, DayWindows] = {}
    th, name, version = model.thresholds, model.name, model.version
    stages = _new_stages()
    sink: list[bytes] = []

    def features(raw: list[bytes], timed: bool) -> tuple[list[Any], np.ndarray]:
        t0 = time.perf_counter()
        evs = [decode_transaction(b) for b in raw]
        t1 = time.perf_counter()
        rows = np.empty((len(evs), full), dtype=np.float32)
        for i, e in enumerate(evs):
            c = cards.get(e.card_id)
            if c is None:
                c = cards[e.card_id] = DayWindows()
            t = terms.get(e.terminal_id)
            if t is None:
                t = terms[e.terminal_id] = DayWindows()
            rows[i] = fraud_features(e.ts_s, e.amount, c, t)  # no labels in memory: terminal risk 0
            apply_transaction(e.ts_s, e.amount, c, t)
        rows = np.ascontiguousarray(rows[:, :width])
        t2 = time.perf_counter()
        if timed:
            stages["decode"] += t1 - t0
            stages["features"] += t2 - t1
        return evs, rows

    def decide(evs: list[Any], rows: np.ndarray, scores: np.ndarray, base: int) -> None:
        t0 = time.perf_counter()
        now = time.time()
        reasons = reasons_for(rows, model.features, model.mean, model.std)
        for i, e in enumerate(evs):
            s = float(scores[i])
            a = action_for("fraud", s, th)
            sink.append(orjson.dumps(build_decision(
                event_id=e.event_id, pipeline="fraud", score=s, action=a, model_name=name, model_version=version,
                reasons=reasons[i], topic="transactions", partition=0, offset=base + i, event_ts_s=e.ts_s,
                input_ts_ms=int(now * 1000), now_s=now)))
        stages["decide"] += time.perf_counter() - t0

    warm = d.fevents[: d.fmeta["warm"]]
    timed = d.fevents[d.fmeta["warm"]: d.fmeta["warm"] + d.fmeta["timed"]]
    for a in range(0, len(warm), 1024):  # windows warm-up (and model warm-up), untimed
        _, rows = features(warm[a:a + 1024], False)
        model.predict(rows)
    _sync(dev)
    batches = [timed[a:a + batch] for a in range(0, len(timed), batch)]
    t_start = time.perf_counter()
    if not overlap:
        for k, raw in enumerate(batches):
            evs, rows = features(raw, True)
            t0 = time.perf_counter()
            scores = model.predict(rows)
            stages["model"] += time.perf_counter() - t0
            decide(evs, rows, scores, k * batch)
    else:
        # batch k's copies and kernels run while the cpu computes batch k+1's features
        evs, rows = features(batches[0], True)
        t0 = time.perf_counter()
        pending = model.predict_async(rows)
        stages["model"] += time.perf_counter() - t0
        for k in range(len(batches)):
            nxt = features(batches[k + 1], True) if k + 1 < len(batches) else None
            t0 = time.perf_counter()
            scores = pending.result()
            if nxt is not None:
                pending = model.predict_async(nxt[1])
            stages["model"] += time.perf_counter() - t0
            decide(evs, rows, scores, k * batch)
            if nxt is not None:
                evs, rows = nxt
    wall = time.perf_counter() - t_start
    model.close()
    n = len(timed)
    return {"events": n, "batch": batch, "events_per_s": n / wall, "wall_s": wall,
            "us_per_event": {k: v / n * 1e6 for k, v in stages.items() if v or k != "tokens"},
            "decisions": len(sink), "check_last": sink[-1][:80].decode(errors="replace")}


def e2e_spam(d: Data, dev: str, kw: dict[str, Any], batch: int) -> dict[str, Any]:
    import orjson

    from feature_store.spam import SPAM_DENSE_FEATURES, apply_email, sender_keys, spam_dense_features
    from feature_store.windows import DayWindows
    from models.spam_model import SpamModel
    from streams.decisions import action_for, build_decision, reasons_for
    from streams.events import decode_email

    model = SpamModel.load(d.model_dir, device=dev, **kw)
    norm = model.metadata["normalisation"]
    mean, std = np.asarray(norm["mean"], dtype=np.float32), np.asarray(norm["std"], dtype=np.float32)
    senders: dict[str, DayWindows] = {}
    domains: dict[str, DayWindows] = {}
    stages = _new_stages()
    sink: list[bytes] = []
    events = (d.sevents * (SPAM_E2E_EVENTS // len(d.sevents) + 1))[:SPAM_E2E_EVENTS]
    model.predict([model.tokens(decode_email(events[0]))], np.zeros((1, len(SPAM_DENSE_FEATURES)), np.float32))
    _sync(dev)
    t_start = time.perf_counter()
    for k, a in enumerate(range(0, len(events), batch)):
        raw = events[a:a + batch]
        t0 = time.perf_counter()
        evs = [decode_email(b) for b in raw]
        t1 = time.perf_counter()
        dense = np.empty((len(evs), len(SPAM_DENSE_FEATURES)), dtype=np.float32)
        for i, e in enumerate(evs):
            s, dm = sender_keys(e)
            sw = senders.get(s) or senders.setdefault(s, DayWindows())
            dw = domains.get(dm) or domains.setdefault(dm, DayWindows())
            dense[i] = spam_dense_features(e, sw, dw)
            apply_email(e, sw, dw)
        t2 = time.perf_counter()
        toks = model.tokens_batch(evs)  # what the worker does (streams/spam_scorer.py)
        t3 = time.perf_counter()
        scores = model.predict(toks, dense)
        t4 = time.perf_counter()
        now = time.time()
        reasons = reasons_for(dense, SPAM_DENSE_FEATURES, mean, std)
        for i, e in enumerate(evs):
            sc = float(scores[i])
            sink.append(orjson.dumps(build_decision(
                event_id=e.event_id, pipeline="spam", score=sc, action=action_for("spam", sc, model.thresholds),
                model_name=model.name, model_version=model.version, reasons=reasons[i], topic="emails",
                partition=0, offset=a + i, event_ts_s=e.ts_s, input_ts_ms=int(now * 1000), now_s=now)))
        t5 = time.perf_counter()
        for key, dt in (("decode", t1 - t0), ("features", t2 - t1), ("tokens", t3 - t2), ("model", t4 - t3),
                        ("decide", t5 - t4)):
            stages[key] += dt
    wall = time.perf_counter() - t_start
    model.close()
    n = len(events)
    return {"events": n, "batch": batch, "events_per_s": n / wall, "wall_s": wall,
            "us_per_event": {k: v / n * 1e6 for k, v in stages.items()}, "decisions": len(sink)}


def end_to_end(d: Data, cuda: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"fraud": {}, "spam": {}}
    fv: list[tuple[str, str, dict[str, Any], bool]] = [("cpu_fp32", "cpu", {}, False)]
    if cuda:
        fv += [("cuda_fp32", "cuda", {}, False),
               ("cuda_fp32_pinned_graphs", "cuda", {"pinned": True, "cuda_graph_sizes": E2E_BATCHES}, False),
               ("cuda_fp32_pinned_graphs_overlap", "cuda", {"pinned": True, "cuda_graph_sizes": E2E_BATCHES}, True)]
    for label, dev, kw, ov in fv:
        out["fraud"][label] = {}
        for b in E2E_BATCHES:
            r = e2e_fraud(d, dev, kw, b, ov)
            out["fraud"][label][str(b)] = r
            log(f"e2e fraud {label:32s} b={b:5d} {r['events_per_s']:,.0f} ev/s "
                + " ".join(f"{k}={v:.2f}us" for k, v in r["us_per_event"].items()))
    sv: list[tuple[str, str, dict[str, Any]]] = [("cpu_fp32", "cpu", {})]
    if cuda:
        sv += [("cuda_fp32", "cuda", {}), ("cuda_fp32_pinned", "cuda", {"pinned": True})]
    for label, dev, kw in sv:
        out["spam"][label] = {}
        for b in E2E_BATCHES:
            r = e2e_spam(d, dev, kw, b)
            out["spam"][label][str(b)] = r
            log(f"e2e spam  {label:32s} b={b:5d} {r['events_per_s']:,.0f} ev/s "
                + " ".join(f"{k}={v:.2f}us" for k, v in r["us_per_event"].items()))
    return out


# ------------------------------------------------------------------------------------------ report


def markdown(res: dict[str, Any]) -> str:
    f = res["facts"]
    gpu = f["gpu"]["name"] if f["gpu"] else "none"
    lines = [f"# GPU bench ({f['date']})", "",
             f"GPU: {gpu}; CPU: {f['cpu_model']} ({f['cpu_count']} cores, torch threads {f['torch_threads']}); "
             f"torch {f['torch']}, python {f['python']}.", ""]
    for model in ("fraud", "spam"):
        micro = res["micro"][model]
        variants = [v for v in micro if "median_ms" in next(iter(micro[v].values()))]
        lines += [f"## {model} model: median / p99 ms per batch, rows/s", "",
                  "| batch | " + " | ".join(variants) + " |", "|---:|" + "---:|" * len(variants)]
        for b in next(iter(micro.values())):
            cells = []
            for v in variants:
                r = micro[v].get(b)
                cells.append("" if r is None else f"{r['median_ms']:.3f} / {r['p99_ms']:.3f} ms, {r['rows_per_s']:,.0f}/s")
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        extra = [v for v in micro if v not in variants]
        for v in extra:
            lines.append("")
            lines.append(f"{v}: " + "; ".join(f"b={b} max|diff| {r['max_abs_diff_vs_eager_fp32']:.1e} "
                                             f"(token budget {r['token_budget']})" for b, r in micro[v].items()))
        lines.append("")
    acc = res["accuracy"]
    lines += ["## Reduced precision on the test split", "", acc["rule"] + ".", "",
              "| model | mode | ROC AUC | Δ AUC | other Δ (max abs) | max abs score diff | action flips | holds |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for model in ("fraud", "spam"):
        for k, e in acc[model].items():
            other = max((abs(v) for kk, v in e.items() if kk.startswith("delta_") and kk != "delta_roc_auc"), default=0.0)
            lines.append(f"| {model} | {k} | {e['roc_auc']:.6f} | {e.get('delta_roc_auc', 0.0):+.2e} | {other:.2e} | "
                         f"{e['max_abs_diff']:.2e} | {e['action_flips']} ({e['flip_fraction']:.4%}) | {e['holds']} |")
    lines.append("")
    for model in ("fraud", "spam"):
        lines += [f"## {model} worker stages end to end (recorded events, in-memory windows): µs/event", "",
                  "| variant | batch | events/s | decode | features | tokens | model | decide |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v, byb in res["e2e"][model].items():
            for b, r in byb.items():
                u = r["us_per_event"]
                lines.append(f"| {v} | {b} | {r['events_per_s']:,.0f} | " + " | ".join(
                    f"{u[k]:.2f}" if k in u else "" for k in ("decode", "features", "tokens", "model", "decide")) + " |")
        lines.append("")
    return "\n".join(lines)


def summary(res: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"gpu": res["facts"]["gpu"]["name"] if res["facts"]["gpu"] else None,
                         "torch": res["facts"]["torch"]}
    for model, big in (("fraud", "4096"), ("spam", "1024")):
        for v, r in res["micro"][model].items():
            if big in r and "rows_per_s" in r[big]:
                s[f"{model}.{v}.rows_per_s_b{big}"] = round(r[big]["rows_per_s"])
            if "1" in r and "median_ms" in r["1"]:
                s[f"{model}.{v}.median_ms_b1"] = round(r["1"]["median_ms"], 4)
        for k, e in res["accuracy"][model].items():
            if k not in ("cpu_fp32", "cuda_fp32"):
                s[f"{model}.{k}.holds"] = e["holds"]
        for v, byb in res["e2e"][model].items():
            s[f"{model}.e2e.{v}.events_per_s_b1024"] = round(byb["1024"]["events_per_s"])
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write gpu_bench.json and gpu_bench.md here")
    ap.add_argument("--data", type=Path, default=ROOT / ".gpu_carry", help="recorded inputs (see --prepare)")
    ap.add_argument("--prepare", action="store_true", help="record the inputs into --data, then exit")
    ap.add_argument("--model-dir", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "spamassassin")
    ap.add_argument("--quick", action="store_true", help="shorter timing loops")
    ap.add_argument("--no-cuda", action="store_true", help="cpu only even where cuda is available")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: micro,accuracy,e2e")
    a = ap.parse_args(argv)
    if a.prepare:
        prepare(a.data, a.model_dir, a.corpus)
        return 0
    if a.out is None:
        ap.error("--out is required (or --prepare)")
    cuda = torch.cuda.is_available() and not a.no_cuda
    skip = set(filter(None, a.skip.split(",")))
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"facts": machine_facts(), "data": str(a.data), "cuda_used": cuda,
                           "micro": {"fraud": {}, "spam": {}}, "accuracy": {"rule": "", "fraud": {}, "spam": {}},
                           "e2e": {"fraud": {}, "spam": {}}}
    log(f"facts: {json.dumps(res['facts'])}")
    d = Data(a.data)
    log(f"data: fraud test {d.fX.shape}, {len(d.fevents):,} fraud events; spam test {len(d.stoks)}, "
        f"{len(d.sevents)} emails")
    if "micro" not in skip:
        res["micro"]["fraud"] = micro_fraud(d, cuda, a.quick)
        res["micro"]["spam"] = micro_spam(d, cuda, a.quick)
    if "accuracy" not in skip:
        res["accuracy"] = accuracy(d, cuda)
    if "e2e" not in skip:
        res["e2e"] = end_to_end(d, cuda)
    res["elapsed_s"] = time.perf_counter() - t0
    (a.out / "gpu_bench.json").write_text(json.dumps(res, indent=1))
    try:
        (a.out / "gpu_bench.md").write_text(markdown(res) + "\n")
    except (KeyError, StopIteration) as exc:  # a skipped part
        log(f"markdown incomplete ({exc!r})")
    print(json.dumps(summary(res) if not skip else {"elapsed_s": res["elapsed_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
