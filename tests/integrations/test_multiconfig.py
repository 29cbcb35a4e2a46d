"""Settings for several pools: ``pools_from_mapping`` / ``pools_from_env``, secrets, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from poolkit import ConfigError, ConnectError, PoolConfig
from poolkit._multiconfig import PoolSettings, Secret, pools_from_env, pools_from_mapping

CANARY = "canary-Pa55w0rd-7f3a"


def assert_no_canary(*texts: object) -> None:
    """No text shows the canary secret."""
    for text in texts:
        assert CANARY not in str(text)
        assert CANARY not in repr(text)


def test_mapping_builds_one_settings_per_pool() -> None:
    """Each key becomes a named pool; PoolConfig fields, defaults and options are applied."""
    settings = pools_from_mapping(
        {
            "postgres": {"dsn": "postgresql://app@db:5432/main", "max_size": 20},
            "http": {"url": "https://api.example.com", "max_size": "50", "options": {"x": 1}},
            "replica": {"dsn": "postgres://ro@replica/main"},
        },
        acquire_timeout=5.0,
    )
    assert list(settings) == ["postgres", "http", "replica"]
    pg = settings["postgres"]
    assert pg.backend == "postgres"
    assert pg.config == PoolConfig(max_size=20, acquire_timeout=5.0, name="postgres")
    assert pg.target == "postgresql://app@db:5432/main"
    assert settings["http"].backend == "http"
    assert settings["http"].config.max_size == 50
    assert settings["http"].options == {"x": 1}
    assert settings["replica"].backend == "postgres"  # from the scheme
    assert settings["replica"].config.name == "replica"


def test_explicit_backend_and_name_win() -> None:
    """``backend`` and ``name`` given in the mapping are used as is."""
    settings = pools_from_mapping(
        {"orders": {"backend": "MySQL", "dsn": "mariadb://u@h/db", "name": "orders-primary"}}
    )
    assert settings["orders"].backend == "mysql"
    assert settings["orders"].config.name == "orders-primary"


def test_secrets_from_mapping_and_files(tmp_path: Path) -> None:
    """Passwords and DSNs may come from files; one trailing newline is stripped."""
    password_file = tmp_path / "pg_password"
    password_file.write_text(CANARY + "\n")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"postgresql://app:{CANARY}@db/main?sslpassword={CANARY}\r\n")
    settings = pools_from_mapping(
        {
            "postgres": {"dsn_file": str(dsn_file), "password_file": password_file},
            "cache": {"backend": "http", "password": CANARY},
        }
    )
    pg = settings["postgres"]
    assert pg.password is not None and pg.password.get_secret_value() == CANARY
    assert pg.dsn is not None and pg.dsn.get_secret_value().endswith(CANARY)
    assert pg.target == "postgresql://app@db/main"
    assert settings["cache"].password == Secret(CANARY)
    assert_no_canary(settings, pg, pg.dsn, pg.password, pg.target)


def test_secret_never_shows_itself() -> None:
    """Secret's repr and str are masked; equality compares values."""
    secret = Secret(CANARY)
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "********"
    assert f"{secret}" == "********"
    assert secret == Secret(CANARY)
    assert secret != Secret("other")
    assert len({secret, Secret(CANARY)}) == 1
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_env_reads_config_target_and_password_file(tmp_path: Path) -> None:
    """``{NAME}_POOL_*`` variables configure pool ``name``; secrets may come from files."""
    password_file = tmp_path / "secret"
    password_file.write_text(CANARY)
    env = {
        "POSTGRES_POOL_MIN_SIZE": "2",
        "POSTGRES_POOL_MAX_SIZE": "8",
        "POSTGRES_POOL_MAX_IDLE_TIME": "none",
        "POSTGRES_POOL_DSN": "postgresql://app@db/main",
        "POSTGRES_POOL_PASSWORD_FILE": str(password_file),
        "HTTP_POOL_URL": "https://api.example.com:8443/v1",
        "HTTP_POOL_ACQUIRE_TIMEOUT": "2.5",
        "UNRELATED": "x",
    }
    settings = pools_from_env(environ=env, connect_timeout=3.0)
    assert sorted(settings) == ["http", "postgres"]
    pg = settings["postgres"]
    assert (pg.config.min_size, pg.config.max_size, pg.config.max_idle_time) == (2, 8, None)
    assert pg.config.connect_timeout == 3.0
    assert pg.password == Secret(CANARY)
    assert settings["http"].backend == "http"
    assert settings["http"].config.acquire_timeout == 2.5
    assert settings["http"].target == "https://api.example.com:8443/v1"


def test_env_pool_list_and_explicit_names() -> None:
    """POOLKIT_POOLS or ``names`` choose the pools; their variables may be all defaults."""
    env = {"POOLKIT_POOLS": "postgres, mysql", "MYSQL_POOL_MAX_SIZE": "3"}
    settings = pools_from_env(environ=env)
    assert list(settings) == ["postgres", "mysql"]
    assert settings["mysql"].config.max_size == 3
    assert settings["postgres"].dsn is None
    assert list(pools_from_env(["http"], environ={})) == ["http"]


def test_env_with_no_pool_is_an_error() -> None:
    """Without any pool variable, the error says how to configure one."""
    with pytest.raises(ConfigError, match="POOLKIT_POOLS.*no pool configured"):
        pools_from_env(environ={"HOME": "/root"})


def test_env_misspelt_variable_is_named_with_a_suggestion_and_not_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unknown ``*_POOL_*`` variable is an error suggesting the right name; no value shown."""
    caplog.set_level(logging.DEBUG)
    env = {"POSTGRES_POOL_DSN": "postgresql://a@b/c", "POSTGRES_POOL_PASWORD": CANARY}
    with pytest.raises(ConfigError) as info:
        pools_from_env(environ=env)
    message = str(info.value)
    assert "POSTGRES_POOL_PASWORD" in message
    assert "did you mean POSTGRES_POOL_PASSWORD?" in message
    assert_no_canary(message, info.value.args, caplog.text)


def test_mapping_unknown_key_suggests_and_hides_value() -> None:
    """An unknown key in the mapping names ``pool.key`` and suggests the closest field."""
    with pytest.raises(ConfigError) as info:
        pools_from_mapping({"postgres": {"max_sise": 3, "pasword": CANARY}})
    assert "postgres.max_sise" in str(info.value)
    assert "did you mean postgres.max_size?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        pools_from_mapping({"postgres": {"pasword": CANARY}})
    assert "postgres.pasword" in str(info.value)
    assert_no_canary(str(info.value))


def test_invalid_config_value_names_the_setting() -> None:
    """A PoolConfig error is re-labelled with the pool (mapping) or the variable (env)."""
    with pytest.raises(ConfigError, match=r"postgres\.min_size=5: must not exceed max_size \(2\)"):
        pools_from_mapping({"postgres": {"min_size": 5, "max_size": 2}})
    with pytest.raises(ConfigError, match=r"HTTP_POOL_MAX_SIZE='lots': must be an integer"):
        pools_from_env(environ={"HTTP_POOL_URL": "http://h", "HTTP_POOL_MAX_SIZE": "lots"})
    with pytest.raises(ConfigError, match="unknown pool configuration field"):
        pools_from_mapping({"postgres": {}}, max_sizes=3)


def test_conflicting_secret_sources_are_rejected(tmp_path: Path) -> None:
    """Both a password and a password file (or dsn and url) is ambiguous."""
    secret = tmp_path / "pw"
    secret.write_text(CANARY)
    with pytest.raises(
        ConfigError, match="password_file.*conflicts with postgres.password"
    ) as info:
        pools_from_mapping({"postgres": {"password": CANARY, "password_file": str(secret)}})
    assert_no_canary(str(info.value))
    with pytest.raises(ConfigError, match="conflicts"):
        pools_from_mapping({"http": {"dsn": "http://a", "url": "http://b"}})


def test_unreadable_or_empty_secret_file_is_named(tmp_path: Path) -> None:
    """A missing or empty secrets file names the setting and the path."""
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=r"POSTGRES_POOL_PASSWORD_FILE.*cannot read .*absent"):
        pools_from_env(["postgres"], environ={"POSTGRES_POOL_PASSWORD_FILE": str(missing)})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        pools_from_mapping({"postgres": {"password_file": str(empty)}})


def test_dsn_scheme_must_match_the_backend() -> None:
    """A DSN for another backend is rejected, showing the scheme but not the DSN."""
    with pytest.raises(ConfigError) as info:
        pools_from_mapping({"postgres": {"dsn": f"mysql://root:{CANARY}@db/x"}})
    assert "scheme mysql:// does not match backend 'postgres'" in str(info.value)
    assert "postgres.dsn=<redacted>" in str(info.value)
    assert_no_canary(str(info.value))


@pytest.mark.parametrize(
    ("pools", "match"),
    [
        ({"cache": {}}, "cannot tell which backend pool 'cache' uses"),
        ({"cache": {"backend": "redis"}}, "unknown backend"),
        ({"cache": {"dsn": "not a url"}}, "must be a URL"),
        ({"cache": {"dsn": "http://h:port/"}}, "not a valid URL"),
        ({"9lives": {}}, "a pool name must start with a letter"),
        ({"http": {"options": ["x"]}}, "must be a mapping"),
        ({"http": "max_size=3"}, "must be a mapping of settings"),
    ],
)
def test_bad_settings_are_named(pools: dict[str, object], match: str) -> None:
    """Each invalid setting raises ConfigError explaining the rule."""
    with pytest.raises(ConfigError, match=match):
        pools_from_mapping(pools)  # type: ignore[arg-type]


def test_settings_repr_shows_target_but_no_secret() -> None:
    """repr(PoolSettings) has the redacted target and whether a password is set."""
    settings = pools_from_mapping(
        {"postgres": {"dsn": f"postgresql://app:{CANARY}@db/main", "password": CANARY}}
    )["postgres"]
    text = repr(settings)
    assert "target='postgresql://app@db/main'" in text
    assert "password='set'" in text
    assert_no_canary(text)


def test_create_pool_reports_a_missing_backend_module() -> None:
    """A dotted backend that cannot be imported, or lacks create_pool, is a ConfigError."""
    settings = PoolSettings(name="x", backend="no_such_module.pools", config=PoolConfig())
    with pytest.raises(ConfigError, match="cannot import no_such_module.pools"):
        settings.create_pool()
    settings = PoolSettings(name="x", backend="poolkit.testing", config=PoolConfig())
    with pytest.raises(ConfigError, match="poolkit.testing has no create_pool"):
        settings.create_pool()


async def test_mysql_settings_create_a_working_pool(mysql_dsn: str) -> None:
    """Settings from the environment build a real MariaDB pool through create_pool()."""
    env = {"MYSQL_POOL_DSN": mysql_dsn, "MYSQL_POOL_MAX_SIZE": "2", "MYSQL_POOL_MIN_SIZE": "1"}
    settings = pools_from_env(environ=env)["mysql"]
    pool = settings.create_pool()
    async with pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 41 + 1")
            assert await cur.fetchone() == (42,)
        assert pool.stats().max_size == 2
        assert pool.name == "mysql"


async def test_postgres_password_file_reaches_the_driver_but_nothing_else(
    tmp_path: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A password read from *_PASSWORD_FILE is used to connect and never shown anywhere."""
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "pg_password"
    secret.write_text(CANARY + "\n")
    env = {
        "POSTGRES_POOL_DSN": pg_dsn,
        "POSTGRES_POOL_PASSWORD_FILE": str(secret),
        "POSTGRES_POOL_MAX_SIZE": "2",
    }
    settings = pools_from_env(environ=env)["postgres"]
    pool = settings.create_pool()
    async with pool:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        stats = pool.stats()
        assert stats.max_size == 2
        assert_no_canary(repr(pool), stats, stats.as_dict(), settings)
    # The same settings against a port where nobody listens: the error hides the password too.
    refused = pools_from_mapping(
        {"postgres": {"dsn": "postgresql://postgres@127.0.0.1:1/test", "password": CANARY}},
        connect_timeout=2.0,
        reconnect_max_delay=0.1,
    )["postgres"]
    broken = refused.create_pool()
    with pytest.raises(ConnectError) as info:
        async with broken:
            pass
    assert_no_canary(str(info.value), repr(info.value), repr(broken), caplog.text)
    assert all(CANARY not in r.getMessage() for r in caplog.records)
