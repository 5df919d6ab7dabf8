import numpy as np
import pytest

from streams.decisions import action_for, build_decision, check_thresholds, reasons_for


@pytest.mark.parametrize("score, action", [(0.0, "allow"), (0.49, "allow"), (0.5, "review"), (0.89, "review"),
                                           (0.9, "block"), (1.0, "block")])
def test_fraud_thresholds_to_actions(score: float, action: str) -> None:
    assert action_for("fraud", score, {"review": 0.5, "block": 0.9}) == action


@pytest.mark.parametrize("score, action", [(0.1, "deliver"), (0.7, "quarantine"), (0.99, "reject")])
def test_spam_thresholds_to_actions(score: float, action: str) -> None:
    assert action_for("spam", score, {"quarantine": 0.6, "reject": 0.95}) == action


def test_bad_thresholds_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        check_thresholds("fraud", {"review": 0.5})
    with pytest.raises(ValueError, match="rise"):
        check_thresholds("spam", {"quarantine": 0.9, "reject": 0.5})


def test_reasons_name_unusual_features() -> None:
    r = reasons_for(np.array([[10.0, 0.0, -5.0], [0.0, 1.0, 0.0]]), ["a", "b", "c"], np.zeros(3), np.ones(3))
    assert r == [["a:+10.0sd", "c:-5.0sd"], []]


def test_decision_payload_fields() -> None:
    d = build_decision(event_id="tx-1", pipeline="fraud", score=0.93, action="block", model_name="fraud-mlp",
                       model_version="3", reasons=[], topic="transactions", partition=0, offset=1234,
                       event_ts_s=1795347141.123, input_ts_ms=1795347141000, now_s=1795347141.0031)
    assert d["source"] == {"topic": "transactions", "partition": 0, "offset": 1234}
    assert d["model"] == {"name": "fraud-mlp", "version": "3"}
    assert d["event_ts"] == "2026-11-22T11:32:21.123Z"
    assert d["latency_ms"] == pytest.approx(3.1, abs=1e-3)
    assert "features" not in d
    d2 = build_decision(event_id="tx-1", pipeline="fraud", score=0.1, action="allow", model_name="m", model_version="1",
                        reasons=[], topic="t", partition=0, offset=0, event_ts_s=0.0, input_ts_ms=None,
                        features={"amount": 1.0}, defaulted=[])
    assert d2["features"] == {"amount": 1.0} and d2["defaulted"] == [] and d2["latency_ms"] is None
