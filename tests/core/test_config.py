"""PoolConfig validation, from_env and from_mapping."""

from __future__ import annotations

from typing import Any

import pytest

from poolkit import ConfigError, Pool, PoolConfig
from poolkit.testing import FakeConnector


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("min_size", -1, "must be >= 0"),
        ("max_size", 0, "must be >= 1"),
        ("max_size", True, "must be an integer"),
        ("max_size", 2.5, "must be an integer"),
        ("acquire_timeout", 0, "must be > 0"),
        ("acquire_timeout", float("nan"), "must be finite"),
        ("acquire_timeout", "30", "must be a number of seconds"),
        ("max_waiting", -5, "must be >= 0"),
        ("connect_timeout", -1.0, "must be > 0"),
        ("check_on_acquire", "sometimes", "must be"),
        ("check_on_acquire", -1, "must be >= 0"),
        ("max_lifetime", float("inf"), "use None for no limit"),
        ("lifetime_jitter", 1.5, "between 0.0 and 1.0"),
        ("max_uses", 0, "must be >= 1"),
        ("name", "", "non-empty"),
    ],
)
def test_invalid_value_names_field_value_and_rule(field: str, value: Any, rule: str) -> None:
    """Each bad value raises ConfigError (a ValueError) naming the field, value and rule."""
    with pytest.raises(ConfigError) as info:
        PoolConfig(**{field: value})
    message = str(info.value)
    assert f"{field}=" in message
    assert rule in message
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_min_size_above_max_size_is_refused() -> None:
    """min_size greater than max_size is refused, naming both."""
    with pytest.raises(ConfigError, match=r"min_size=5: must not exceed max_size \(3\)"):
        PoolConfig(min_size=5, max_size=3)


def test_odd_but_legal_combination_warns_once() -> None:
    """A legal but suspicious combination warns at construction."""
    with pytest.warns(UserWarning, match="max_idle_time"):
        PoolConfig(max_idle_time=100.0, max_lifetime=50.0, health_check_interval=None)


def test_from_env_reads_prefixed_variables() -> None:
    """from_env('POSTGRES_POOL') reads POSTGRES_POOL_* variables, converting types."""
    env = {
        "POSTGRES_POOL_MIN_SIZE": "2",
        "POSTGRES_POOL_MAX_SIZE": "20",
        "POSTGRES_POOL_ACQUIRE_TIMEOUT": "2.5",
        "POSTGRES_POOL_MAX_LIFETIME": "none",
        "POSTGRES_POOL_CHECK_ON_ACQUIRE": "always",
        "POSTGRES_POOL_NAME": "pg-main",
        "OTHER_POOL_MAX_SIZE": "99",
    }
    config = PoolConfig.from_env("POSTGRES_POOL", environ=env)
    assert config.min_size == 2
    assert config.max_size == 20
    assert config.acquire_timeout == 2.5
    assert config.max_lifetime is None
    assert config.check_on_acquire == "always"
    assert config.name == "pg-main"


def test_from_env_error_names_the_variable() -> None:
    """A bad environment value is reported under the variable's name."""
    with pytest.raises(ConfigError, match="POSTGRES_POOL_MAX_SIZE='lots'"):
        PoolConfig.from_env("POSTGRES_POOL", environ={"POSTGRES_POOL_MAX_SIZE": "lots"})


def test_from_env_defaults_apply_when_unset() -> None:
    """Defaults passed to from_env fill what the environment does not set."""
    config = PoolConfig.from_env("X_POOL", environ={}, max_size=7)
    assert config.max_size == 7


def test_from_mapping_parses_strings_and_rejects_unknown_keys() -> None:
    """from_mapping accepts strings like the environment and refuses unknown fields."""
    config = PoolConfig.from_mapping({"max_size": "4", "leak_threshold": "60"})
    assert config.max_size == 4
    assert config.leak_threshold == 60.0
    with pytest.raises(ConfigError, match="max_sise"):
        PoolConfig.from_mapping({"max_sise": 4})


def test_replace_validates() -> None:
    """replace() returns a validated copy."""
    config = PoolConfig(max_size=3)
    assert config.replace(max_size=5).max_size == 5
    with pytest.raises(ConfigError):
        config.replace(max_size=-1)


def test_config_is_frozen() -> None:
    """A PoolConfig cannot be mutated."""
    config = PoolConfig()
    with pytest.raises(AttributeError):
        config.max_size = 3  # type: ignore[misc]


def test_pool_accepts_config_and_overrides() -> None:
    """Pool(connector, config, **fields) applies the overrides on top of the config."""
    pool = Pool(FakeConnector(), PoolConfig(max_size=3, min_size=0), max_size=5)
    assert pool.config.max_size == 5
    with pytest.raises(ConfigError, match="unknown pool configuration field"):
        Pool(FakeConnector(), max_sise=5)


def test_split_options_separates_pool_fields_from_driver_parameters() -> None:
    """split_options() routes PoolConfig fields and driver parameters, refusing the rest
    without showing the value (a misspelt keyword may be a password)."""
    pool_opts, driver_opts = PoolConfig.split_options(
        {"max_size": 4, "ssl": True}, {"ssl", "host"}, driver="somedb.connect()"
    )
    assert pool_opts == {"max_size": 4}
    assert driver_opts == {"ssl": True}
    with pytest.raises(ConfigError) as info:
        PoolConfig.split_options({"pasword": "s3cret"}, {"password"}, driver="somedb.connect()")
    assert "pasword" in str(info.value)
    assert "somedb.connect()" in str(info.value)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="binds the running loop"):
        PoolConfig.split_options({"loop": object()}, set(), driver="x")
    with pytest.raises(ConfigError, match="use connect_timeout"):
        PoolConfig.split_options(
            {"timeout": 3}, {"timeout"}, driver="x", refused={"timeout": "use connect_timeout"}
        )
