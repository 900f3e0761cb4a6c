from __future__ import annotations

from embedcurate.pipeline.redact import REDACTED, env_secrets, is_secret_key, redact, scrub_text


def test_secret_looking_names() -> None:
    for name in (
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "client_secret",
        "password",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert is_secret_key(name), name
    for name in ("api_key_env", "max_tokens", "tokenizer", "TOKENIZERS_PARALLELISM", "model"):
        assert not is_secret_key(name), name


def test_config_values_under_secret_keys_are_replaced_but_variable_names_kept() -> None:
    config = {
        "generator": {"api_key_env": "OPENAI_API_KEY", "api_key": "abc123", "max_tokens": 320},
        "headers": [{"authorization": "Basic dXNlcjpwYXNz"}, {"token": "HF_TOKEN"}],
    }
    cleaned = redact(config, secrets=[])
    assert cleaned["generator"] == {
        "api_key_env": "OPENAI_API_KEY", "api_key": REDACTED, "max_tokens": 320,
    }  # fmt: skip
    assert cleaned["headers"] == [{"authorization": REDACTED}, {"token": "HF_TOKEN"}]
    assert config["generator"]["api_key"] == "abc123"  # a copy; the input is untouched


def test_credential_shapes_and_environment_values_are_scrubbed_from_text() -> None:
    text = (
        "key sk-abcdefghijklmnopqrstu, hf_abcdefghijklmnopqrstuvwx, https://bob:hunter2@host/v1, "
        "https://host/v1?api_key=zzz&x=1, Authorization: Bearer abcdefghijklmnop, "
        "value s3cr3t-v4lue"
    )
    scrubbed = scrub_text(text, secrets=["s3cr3t-v4lue"])
    for secret in ("sk-abc", "hf_abc", "hunter2", "zzz", "abcdefghijklmnop", "s3cr3t-v4lue"):
        assert secret not in scrubbed, secret
    assert "https://***redacted***@host/v1" in scrubbed
    assert "?api_key=***redacted***&x=1" in scrubbed


def test_environment_secrets_are_the_values_of_secret_named_variables() -> None:
    env = {"MY_API_KEY": "longenough123", "HF_TOKEN": "short", "HOME": "/home/someone-long"}
    assert env_secrets(env) == ["longenough123"]
