"""Session fixtures: one real broker and Redis for the whole run; per-test names."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.stack import ROOT, Stack, real_stack, spam_corpus


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with real_stack() as s:
        yield s


@pytest.fixture
def prefix() -> str:
    """A unique topic / group / feature-namespace prefix for one test."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default artifacts (ops/test.sh trains them); quick ones if absent."""
    from models.artifacts import latest_version

    configured = Path(os.environ.get("STREAMINFER_MODEL_DIR", ROOT / "artifacts"))
    if latest_version(configured, "fraud-mlp") and latest_version(configured, "spam-ngram"):
        return configured
    out = tmp_path_factory.mktemp("models")
    from models.train_fraud import train as train_fraud
    from models.train_spam import train as train_spam

    train_fraud(out, quick=True)
    train_spam(out, spam_corpus(), quick=True)
    return out
