"""The ``streaminfer`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from streams.settings import Settings

PIPELINES = ("fraud", "spam")
MODEL_NAMES = {"fraud": "fraud-mlp", "spam": "spam-ngram"}


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streams.runner import run_many

    return run_many(settings, args.pipeline, args.workers, args.model_version, args.exactly_once, args.worker_index)


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from models.artifacts import latest_version

    name = MODEL_NAMES[args.pipeline]
    if args.if_missing and latest_version(settings.model_dir, name) is not None:
        print(f"{name}: version {latest_version(settings.model_dir, name)} present in {settings.model_dir}; not retraining")
        return 0
    if args.pipeline == "fraud":
        from models.train_fraud import train as train_fraud

        art = train_fraud(settings.model_dir, quick=args.quick)
    else:
        from models.train_spam import train as train_spam

        art = train_spam(settings.model_dir, Path(args.corpus), quick=args.quick)
    print(f"{name}: wrote version {art.version} to {art.path}")
    return 0


def _cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from models.artifacts import load_artifact, versions

    out = {}
    for pipeline, name in MODEL_NAMES.items():
        vs = versions(settings.model_dir, name)
        if not vs:
            out[name] = None
            continue
        meta = load_artifact(settings.model_dir, name, str(vs[-1])).metadata
        out[name] = {"versions": vs, "latest": meta.get("version"), "thresholds": meta.get("thresholds"),
                     "metrics": meta.get("metrics"), "baselines": meta.get("baselines")}
    print(json.dumps(out, indent=2))
    return 0


def _cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka_admin import ensure_topics
    from streams.pipelines import topics_for

    names = [t for p in PIPELINES for t in topics_for(p, settings.topic_prefix).all()]
    created = ensure_topics(settings.kafka_config(), names, settings.partitions, settings.replication_factor)
    print(json.dumps({"created": created, "all": names}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streaminfer", description="Streaming fraud and spam inference over Kafka.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline's workers until SIGTERM/SIGINT")
    r.add_argument("pipeline", choices=PIPELINES)
    r.add_argument("--workers", type=int, default=1, help="worker processes in one consumer group")
    r.add_argument("--model-version", default=None, help="model version to serve (default: latest)")
    r.add_argument("--exactly-once", action="store_true", help="transactional consume-transform-produce")
    r.add_argument("--worker-index", type=int, default=0,
                   help="first worker index on this host (exactly-once: part of the transactional id; "
                        "give separately started processes on one host different indexes)")
    r.set_defaults(func=_cmd_run)

    t = sub.add_parser("train", help="train a model and write a new artifact version")
    t.add_argument("pipeline", choices=PIPELINES)
    t.add_argument("--if-missing", action="store_true", help="do nothing if a version exists")
    t.add_argument("--quick", action="store_true", help="small data, for tests")
    t.add_argument("--corpus", default="data/spamassassin", help="SpamAssassin corpus folder (spam)")
    t.set_defaults(func=_cmd_train)

    m = sub.add_parser("models", help="list model versions with thresholds and test metrics")
    m.set_defaults(func=_cmd_models)

    tp = sub.add_parser("topics", help="create the pipelines' topics if missing")
    tp.set_defaults(func=_cmd_topics)

    from feature_store.cli import register as register_features

    register_features(sub)

    from streams.bench import register as register_bench

    register_bench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    return int(args.func(args, Settings.from_env()) or 0)


if __name__ == "__main__":
    sys.exit(main())
