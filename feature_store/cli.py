"""``streaminfer features ...``: the label app and the backfill.

Wired into the ``streaminfer`` command by ``streams.cli`` with::

    from feature_store.cli import register as register_features
    register_features(sub)          # sub = the parser's add_subparsers(...) object

Each subcommand sets ``func(args, settings) -> int`` like the other commands.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _cmd_run(args: argparse.Namespace, settings: Any) -> int:
    # The faust app reads its settings from the environment at import: pass ours on.
    env = {
        "STREAMINFER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMINFER_REDIS_URL": settings.redis_url.get(),
        "STREAMINFER_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMINFER_FEATURE_NAMESPACE": settings.feature_namespace,
        "STREAMINFER_PARTITIONS": str(settings.partitions),
        "STREAMINFER_REPLICATION_FACTOR": str(settings.replication_factor),
    }
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if args.data_dir:
        os.environ["STREAMINFER_LABELS_DATA_DIR"] = args.data_dir
    from feature_store.labels_app import main

    return main(["-l", args.loglevel])


def _cmd_backfill(args: argparse.Namespace, settings: Any) -> int:
    from feature_store.backfill import backfill
    from feature_store.store import FeatureStore, connect

    if args.namespace == settings.feature_namespace and not args.allow_production:
        print(f"refusing to backfill into the serving namespace {args.namespace!r} "
              "(STREAMINFER_FEATURE_NAMESPACE); pass --allow-production to mean it")
        return 2
    store = FeatureStore(connect(settings.redis_url.get(), settings.redis_timeout_s), args.namespace)
    labels = None
    if args.labels:
        labels = {"fraud": settings.topic("fraud.labels"), "spam": settings.topic("spam.feedback")}
    try:
        stats = backfill(settings.kafka_config(), settings.topic(args.topic), store, args.start,
                         pipeline=args.pipeline, batch_max=settings.batch_max, labels_topics=labels)
    finally:
        store.close()
    print(json.dumps({"namespace": args.namespace, "topic": settings.topic(args.topic), **stats.as_dict()}))
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``features run`` and ``features backfill`` to the ``streaminfer`` parser."""
    f = subparsers.add_parser("features", help="streaming features: label app, backfill")
    fs = f.add_subparsers(dest="features_command", required=True)

    r = fs.add_parser("run", help="run the label-feedback app (faust) until SIGTERM/SIGINT")
    r.add_argument("--data-dir", default=None, help="faust data dir (default ./.faust)")
    r.add_argument("--loglevel", default="info")
    r.set_defaults(func=_cmd_run)

    b = fs.add_parser("backfill", help="rebuild feature state from a topic's history into a namespace")
    b.add_argument("--topic", required=True, help="input topic without the prefix: transactions or emails")
    b.add_argument("--from", dest="start", default="earliest",
                   help="earliest, an offset (every partition), or a time: RFC 3339 or ms:<epoch ms>")
    b.add_argument("--namespace", required=True, help="feature namespace to write (never production by default)")
    b.add_argument("--pipeline", choices=("fraud", "spam"), default=None, help="default: from the topic")
    b.add_argument("--labels", action="store_true", help="also materialise fraud.labels and spam.feedback")
    b.add_argument("--allow-production", action="store_true", help="allow writing the serving namespace")
    b.set_defaults(func=_cmd_backfill)
    return f


def main(argv: list[str] | None = None) -> int:
    """``python -m feature_store.cli features ...`` until streams.cli wires ``register``."""
    import logging

    from streams.settings import Settings

    p = argparse.ArgumentParser(prog="streaminfer")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    return int(args.func(args, Settings.from_env()) or 0)


if __name__ == "__main__":
    import sys

    sys.exit(main())
