from pathlib import Path

from streams.settings import Secret, Settings, redact_url


def test_defaults_match_design() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.redis_url.get() == "redis://localhost:6379/0"
    assert s.model_dir == Path("./artifacts") and s.device == "auto"


def test_kafka_properties_and_secrets_from_env() -> None:
    s = Settings.from_env({"STREAMINFER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                           "STREAMINFER_KAFKA__SASL_PASSWORD": "hunter2",
                           "STREAMINFER_REDIS_URL": "redis://u:pw@host:6379/0"})
    conf = s.kafka_config()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "hunter2"
    assert isinstance(s.kafka_extra["sasl.password"], Secret)
    assert "hunter2" not in repr(s) and "pw@" not in repr(s)
    assert redact_url(s.redis_url.get()) == "redis://u:***@host:6379/0"


def test_settings_are_frozen() -> None:
    import dataclasses

    import pytest

    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().device = "cuda"  # type: ignore[misc]
