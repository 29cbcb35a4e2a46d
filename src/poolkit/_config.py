"""PoolConfig: the frozen, validated pool configuration."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from .errors import ConfigError

__all__ = ("CheckPolicy", "PoolConfig")

#: ``"never"``, ``"always"``, or a number of seconds: check when idle for longer than that.
CheckPolicy = Literal["never", "always"] | float

_OPTIONAL_SECONDS = (
    "max_waiting",
    "max_idle_time",
    "max_lifetime",
    "health_check_interval",
    "leak_threshold",
    "max_uses",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """How a pool sizes, times and maintains its connections.

    Every field is validated when the config is built; a bad value raises
    :class:`~poolkit.ConfigError` naming the field, the value and the rule. Times are seconds;
    ``None`` turns a limit off.

    Attributes:
        min_size: connections kept open even when idle (warmed by ``open()``, refilled after
            failures and reaping).
        max_size: hard cap on open connections, counting those connecting and resetting.
        acquire_timeout: default bound on ``acquire()`` (waiting *and* connecting).
        max_waiting: tasks allowed to wait at once; one more gets ``PoolOverloaded`` at once.
            ``None`` means no bound.
        connect_timeout: bound on opening one connection (including ``on_connect``).
        check_timeout: bound on one health check.
        reset_timeout: bound on the reset that runs after a release.
        close_timeout: bound on closing one connection gracefully (then it is aborted).
        check_on_acquire: ``"never"``, ``"always"``, or a number of seconds: check a connection
            before handing it out when it has been idle for longer than that.
        health_check_interval: check idle connections this often in the background.
        max_idle_time: close connections idle for longer than this, down to ``min_size``.
        max_lifetime: retire connections older than this (when idle or at release, never in
            use), minus a random part of up to ``lifetime_jitter`` of it so that they do not all
            expire together.
        lifetime_jitter: fraction of ``max_lifetime`` (0 to 1) used as jitter.
        max_uses: retire a connection after this many acquires.
        leak_threshold: log a warning with the acquiring stack when a connection is held longer.
        reconnect_initial_delay: first delay of the exponential backoff after a connect failure.
        reconnect_max_delay: cap of that backoff.
        name: the pool's name in reprs, logs, errors and metrics.
    """

    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 30.0
    max_waiting: int | None = None
    connect_timeout: float = 10.0
    check_timeout: float = 5.0
    reset_timeout: float = 5.0
    close_timeout: float = 5.0
    check_on_acquire: CheckPolicy = 1.0
    health_check_interval: float | None = 30.0
    max_idle_time: float | None = 600.0
    max_lifetime: float | None = 3600.0
    lifetime_jitter: float = 0.05
    max_uses: int | None = None
    leak_threshold: float | None = None
    reconnect_initial_delay: float = 0.1
    reconnect_max_delay: float = 30.0
    name: str | None = field(default=None)

    def __post_init__(self) -> None:
        _int(self, "min_size", minimum=0)
        _int(self, "max_size", minimum=1)
        if self.min_size > self.max_size:
            raise ConfigError(
                "min_size", self.min_size, f"must not exceed max_size ({self.max_size})"
            )
        _seconds(self, "acquire_timeout")
        _int(self, "max_waiting", minimum=0, optional=True)
        for name in ("connect_timeout", "check_timeout", "reset_timeout", "close_timeout"):
            _seconds(self, name)
        policy = self.check_on_acquire
        if isinstance(policy, str):
            if policy not in ("never", "always"):
                raise ConfigError(
                    "check_on_acquire",
                    policy,
                    'must be "never", "always" or a number of idle seconds',
                )
        else:
            _seconds(self, "check_on_acquire", allow_zero=True)
        for name in ("health_check_interval", "max_idle_time", "max_lifetime", "leak_threshold"):
            _seconds(self, name, optional=True)
        _number(self, "lifetime_jitter", low=0.0, high=1.0)
        _int(self, "max_uses", minimum=1, optional=True)
        _seconds(self, "reconnect_initial_delay")
        _seconds(self, "reconnect_max_delay")
        if self.reconnect_max_delay < self.reconnect_initial_delay:
            raise ConfigError(
                "reconnect_max_delay",
                self.reconnect_max_delay,
                f"must be at least reconnect_initial_delay ({self.reconnect_initial_delay})",
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigError("name", self.name, "must be a non-empty string or None")
        self._warn_on_odd_combinations()

    def _warn_on_odd_combinations(self) -> None:
        # Legal but probably unintended: say so once, at construction.
        if (
            self.max_idle_time is not None
            and self.max_lifetime is not None
            and self.max_idle_time > self.max_lifetime
        ):
            warnings.warn(
                f"pool config: max_idle_time ({self.max_idle_time}) exceeds max_lifetime "
                f"({self.max_lifetime}); connections retire by age before they go idle-stale",
                UserWarning,
                stacklevel=4,
            )
        if (
            self.health_check_interval is not None
            and self.max_idle_time is not None
            and self.health_check_interval > self.max_idle_time
        ):
            warnings.warn(
                f"pool config: health_check_interval ({self.health_check_interval}) exceeds "
                f"max_idle_time ({self.max_idle_time}); idle connections are reaped before "
                "they are ever checked",
                UserWarning,
                stacklevel=4,
            )

    def replace(self, **changes: Any) -> PoolConfig:
        """Return a copy with ``changes`` applied (validated like the original)."""
        _reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    @staticmethod
    def split_options(
        options: Mapping[str, Any],
        driver_params: Collection[str],
        *,
        driver: str,
        refused: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split a backend's ``**options`` into pool fields and driver parameters.

        For backend authors: ``create_pool(dsn, **options)`` accepts both
        :class:`PoolConfig` fields and the driver's connect parameters.

        Args:
            options: the keyword arguments to split.
            driver_params: the names the driver accepts.
            driver: how to name the driver in errors (e.g. ``"asyncpg.connect()"``).
            refused: names to refuse with a rule of their own (e.g. ``{"timeout": "use
                connect_timeout"}``); ``loop`` is always refused.

        Returns:
            ``(pool_options, driver_options)``.

        Raises:
            ConfigError: an option is refused or unknown. The value is not shown: a misspelt
                keyword may be a password.
        """
        rules = {"loop": "is not supported: a pool binds the running loop", **(refused or {})}
        pool_options: dict[str, Any] = {}
        driver_options: dict[str, Any] = {}
        for key, value in options.items():
            if key in rules:
                raise ConfigError(key, _NOT_SHOWN, rules[key])
            if key in _FIELD_NAMES:
                pool_options[key] = value
            elif key in driver_params:
                driver_options[key] = value
            else:
                raise ConfigError(
                    key, _NOT_SHOWN, f"is neither a PoolConfig field nor a {driver} parameter"
                )
        return pool_options, driver_options

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **defaults: Any) -> PoolConfig:
        """Build a config from a mapping of field names to values.

        Strings are converted like environment variables (``"30"``, ``"none"``, ``"always"``),
        so a mapping read from TOML, YAML or JSON works as is. Unknown keys raise
        :class:`~poolkit.ConfigError`.
        """
        _reject_unknown(values)
        _reject_unknown(defaults)
        merged: dict[str, Any] = dict(defaults)
        for key, raw in values.items():
            merged[key] = _parse(key, raw) if isinstance(raw, str) else raw
        return cls(**merged)

    @classmethod
    def from_env(
        cls, prefix: str, environ: Mapping[str, str] | None = None, **defaults: Any
    ) -> PoolConfig:
        """Build a config from environment variables named ``{PREFIX}_{FIELD}``.

        ``PoolConfig.from_env("POSTGRES_POOL")`` reads ``POSTGRES_POOL_MIN_SIZE``,
        ``POSTGRES_POOL_MAX_SIZE``, ``POSTGRES_POOL_ACQUIRE_TIMEOUT`` and so on. Variables that
        are not set keep ``defaults`` (then the class defaults). ``"none"`` or an empty value
        turns an optional limit off.
        """
        env = os.environ if environ is None else environ
        stem = prefix.rstrip("_").upper() + "_"
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = stem + f.name.upper()
            if key in env:
                values[f.name] = env[key]
        try:
            return cls.from_mapping(values, **defaults)
        except ConfigError as exc:
            raise ConfigError(stem + exc.field.upper(), values.get(exc.field), exc.rule) from None


_FIELD_NAMES = frozenset(f.name for f in fields(PoolConfig))


class _NotShown:
    """Stands for a value an error message must not show (it may be a misspelt password)."""

    def __repr__(self) -> str:
        return "<not shown>"


_NOT_SHOWN = _NotShown()


def _reject_unknown(values: Mapping[str, Any]) -> None:
    for key in values:
        if key not in _FIELD_NAMES:
            raise ConfigError(key, values[key], "unknown pool configuration field")


def _parse(name: str, raw: str) -> Any:
    text = raw.strip()
    if name == "name":
        return text or None
    if name == "check_on_acquire" and text.lower() in ("never", "always"):
        return text.lower()
    if text.lower() in ("", "none", "null", "off") and name in _OPTIONAL_SECONDS:
        return None
    if name in ("min_size", "max_size", "max_waiting", "max_uses"):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(name, raw, "must be an integer") from None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(name, raw, "must be a number of seconds") from None


def _int(cfg: PoolConfig, name: str, *, minimum: int, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer" + (" or None" if optional else ""))
    if value < minimum:
        raise ConfigError(name, value, f"must be >= {minimum}")


def _number(cfg: PoolConfig, name: str, *, low: float, high: float) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, value, "must be a number")
    if not (low <= value <= high) or math.isnan(value):
        raise ConfigError(name, value, f"must be between {low} and {high}")


def _seconds(
    cfg: PoolConfig, name: str, *, optional: bool = False, allow_zero: bool = False
) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            name, value, "must be a number of seconds" + (" or None" if optional else "")
        )
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(
            name, value, "must be finite" + (" (use None for no limit)" if optional else "")
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(name, value, "must be > 0" if not allow_zero else "must be >= 0")


# Keep the public literal values introspectable (used by docs and the CLI).
CHECK_POLICIES: tuple[str, ...] = get_args(get_args(CheckPolicy)[0])
