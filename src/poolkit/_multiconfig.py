"""Settings for several named pools at once, from a mapping or from environment variables.

One pool's sizing and timing is a :class:`~poolkit.PoolConfig`; a service usually has a few pools
("postgres", "http", a read replica) plus, for each, a target and maybe a password kept in a
secrets file. :func:`pools_from_mapping` and :func:`pools_from_env` read all of that, validate it
with errors that name the bad setting, and return one :class:`PoolSettings` per pool.

Secrets (DSNs, URLs, passwords) are wrapped in :class:`Secret`, whose ``repr`` and ``str`` never
show the value, and are never echoed by an error: a :class:`~poolkit.ConfigError` about one names
the setting and the rule, not the value.
"""

from __future__ import annotations

import difflib
import hmac
import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from ._config import PoolConfig
from .errors import ConfigError

__all__ = ("BACKENDS", "PoolSettings", "Secret", "pools_from_env", "pools_from_mapping")

#: Built-in backends and the URL schemes each accepts.
BACKENDS: Final[Mapping[str, frozenset[str]]] = {
    "postgres": frozenset({"postgres", "postgresql"}),
    "mysql": frozenset({"mysql", "mariadb"}),
    "http": frozenset({"http", "https"}),
    "websocket": frozenset({"ws", "wss"}),
}

_SCHEME_TO_BACKEND: Final = {
    scheme: name for name, schemes in BACKENDS.items() for scheme in schemes
}

# Keys a pool's mapping may hold besides the PoolConfig fields.
_TARGET_KEYS: Final = ("dsn", "url", "dsn_file", "url_file")
_SECRET_KEYS: Final = ("password", "password_file")
_OTHER_KEYS: Final = ("backend", "options")
_CONFIG_FIELDS: Final = frozenset(f.name for f in fields(PoolConfig))
_KNOWN_KEYS: Final = _CONFIG_FIELDS | frozenset(_TARGET_KEYS + _SECRET_KEYS + _OTHER_KEYS)

#: Environment variables naming a pool: ``{NAME}_POOL_DSN`` (or ``_URL``, ``_BACKEND``, ...).
_ENV_ANCHOR: Final = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*?)_POOL_(?:DSN|URL|BACKEND)(?:_FILE)?$")
_POOL_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Secret:
    """A string that never shows itself in a ``repr``, ``str``, log line or error message.

    Call :meth:`get_secret_value` where the real value is needed (typically only when the pool's
    connector is built).

    Args:
        value: the secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        """Return the secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSettings:
    """Everything needed to build one named pool.

    Attributes:
        name: the pool's name (the mapping key, or the lower-cased ``{NAME}`` of
            ``{NAME}_POOL_*`` variables); also ``config.name`` unless that was set explicitly.
        backend: ``"postgres"``, ``"mysql"``, ``"http"``, ``"websocket"``, or the dotted path of
            a module offering ``create_pool()``.
        config: the validated pool configuration.
        dsn: the target (DSN or URL), which may embed a password, hence a :class:`Secret`.
        password: a password kept apart from the DSN (e.g. read from ``*_PASSWORD_FILE``).
        options: extra keyword arguments for the backend's ``create_pool()``.
    """

    name: str
    backend: str
    config: PoolConfig
    dsn: Secret | None = None
    password: Secret | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str | None:
        """The DSN with any password, query string and fragment removed, safe to show."""
        return None if self.dsn is None else redact_dsn(self.dsn.get_secret_value())

    def __repr__(self) -> str:
        return (
            f"PoolSettings(name={self.name!r}, backend={self.backend!r}, target={self.target!r}, "
            f"password={'set' if self.password is not None else None!r}, "
            f"options={sorted(self.options)!r}, config={self.config!r})"
        )

    def create_pool(self, **overrides: Any) -> Any:
        """Build the pool through the backend's ``create_pool()`` (not opened yet).

        Calls ``poolkit.<backend>.create_pool(dsn, config=config, password=..., **options)``;
        ``overrides`` replace entries of :attr:`options` (a pool hook such as ``on_connect``,
        for example). ``password`` is passed only when one was configured.

        Returns:
            The backend's pool object.

        Raises:
            ConfigError: the backend module cannot be imported or has no ``create_pool``.
        """
        module_name = self.backend if "." in self.backend else f"poolkit.{self.backend}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"{self.name}.backend", self.backend, f"cannot import {module_name}: {exc}"
            ) from exc
        factory = getattr(module, "create_pool", None)
        if not callable(factory):
            raise ConfigError(
                f"{self.name}.backend", self.backend, f"{module_name} has no create_pool()"
            )
        kwargs: dict[str, Any] = {**self.options, **overrides}
        kwargs.setdefault("config", self.config)
        if self.password is not None:
            kwargs.setdefault("password", self.password.get_secret_value())
        args = () if self.dsn is None else (self.dsn.get_secret_value(),)
        return factory(*args, **kwargs)


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` without password, query string or fragment (``scheme://user@host:port/path``).

    Args:
        dsn: a URL-style DSN.
    """
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable DSN>"
    if not parts.scheme:
        return "<unparsable DSN>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}" + (f":{port}" if port is not None else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


def pools_from_mapping(
    pools: Mapping[str, Mapping[str, Any]], **defaults: Any
) -> dict[str, PoolSettings]:
    """Read the settings of several pools from a mapping (parsed TOML, YAML, JSON, a dict).

    Each key names a pool; its value holds :class:`~poolkit.PoolConfig` fields plus:

    * ``backend``: ``"postgres"``, ``"mysql"``, ``"http"``, ``"websocket"`` or a dotted module
      path. Optional when the pool's name is a backend name or the DSN's scheme tells it.
    * ``dsn`` (or ``url``), or ``dsn_file`` (``url_file``): the target, inline or read from a
      file.
    * ``password`` or ``password_file``: a password kept apart from the DSN.
    * ``options``: a mapping of extra keyword arguments for the backend's ``create_pool()``.

    ::

        pools_from_mapping(
            {
                "postgres": {"dsn": "postgresql://app@db/main", "password_file":
                             "/run/secrets/pg", "max_size": 20},
                "http": {"url": "https://api.example.com", "max_size": 50},
            },
            acquire_timeout=5.0,
        )

    Args:
        pools: pool name -> settings.
        **defaults: :class:`~poolkit.PoolConfig` fields applied to every pool unless it sets them.

    Returns:
        Pool name -> :class:`PoolSettings`, in the mapping's order.

    Raises:
        ConfigError: a setting is unknown or invalid; the error names it as ``<pool>.<key>`` and
            never shows a secret.
    """
    if not isinstance(pools, Mapping):
        raise ConfigError(
            "pools", type(pools).__name__, "must be a mapping of pool name -> settings"
        )
    _check_defaults(defaults)
    result: dict[str, PoolSettings] = {}
    for name, values in pools.items():
        _check_name(name, field_name="pools")
        if not isinstance(values, Mapping):
            raise ConfigError(name, type(values).__name__, "must be a mapping of settings")
        result[name] = _build(name, dict(values), defaults, label=_mapping_label(name))
    return result


def pools_from_env(
    names: Iterable[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **defaults: Any,
) -> dict[str, PoolSettings]:
    """Read the settings of several pools from environment variables.

    Pool ``postgres`` reads ``POSTGRES_POOL_*``: every :class:`~poolkit.PoolConfig` field
    (``POSTGRES_POOL_MIN_SIZE``, ``POSTGRES_POOL_ACQUIRE_TIMEOUT``, ...) and
    ``POSTGRES_POOL_BACKEND``, ``POSTGRES_POOL_DSN`` (or ``_URL``), ``POSTGRES_POOL_DSN_FILE``,
    ``POSTGRES_POOL_PASSWORD`` and ``POSTGRES_POOL_PASSWORD_FILE`` (a secrets file, e.g. a
    Docker or Kubernetes secret; one trailing newline is stripped). A misspelt variable under
    the prefix is an error, with a suggestion.

    Args:
        names: the pools to read. ``None`` reads the comma-separated ``POOLKIT_POOLS``, or else
            every ``{NAME}`` that has a ``{NAME}_POOL_DSN``, ``_URL`` or ``_BACKEND`` variable.
        environ: the variables (default ``os.environ``).
        **defaults: :class:`~poolkit.PoolConfig` fields applied to every pool unless set.

    Returns:
        Pool name (lower case) -> :class:`PoolSettings`.

    Raises:
        ConfigError: a variable is unknown or invalid (named, its value never shown if secret),
            or no pool is configured at all.
    """
    env = os.environ if environ is None else environ
    _check_defaults(defaults)
    if names is None:
        listed = env.get("POOLKIT_POOLS", "")
        if listed.strip():
            wanted = [part.strip() for part in listed.split(",") if part.strip()]
        else:
            wanted = sorted(
                {m["name"].lower() for key in env if (m := _ENV_ANCHOR.match(key)) is not None}
            )
        if not wanted:
            raise ConfigError(
                "POOLKIT_POOLS",
                listed,
                "no pool configured: set POOLKIT_POOLS=name,... or {NAME}_POOL_DSN",
            )
    else:
        wanted = list(names)
    result: dict[str, PoolSettings] = {}
    for raw_name in wanted:
        _check_name(raw_name, field_name="POOLKIT_POOLS")
        name = raw_name.lower()
        prefix = f"{name.upper()}_POOL_"
        values: dict[str, Any] = {}
        for key, value in env.items():
            if not key.startswith(prefix):
                continue
            setting = key[len(prefix) :].lower()
            if setting not in _KNOWN_KEYS or setting == "options":
                # Never echo the value: a misspelt PASWORD variable still holds a secret.
                raise ConfigError(key, "<redacted>", _unknown_rule(setting, _env_label(prefix)))
            values[setting] = value
        result[name] = _build(name, values, defaults, label=_env_label(prefix))
    return result


def _check_defaults(defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if key not in _CONFIG_FIELDS:
            raise ConfigError(key, value, "unknown pool configuration field")


def _check_name(name: object, *, field_name: str) -> None:
    if not isinstance(name, str) or not _POOL_NAME.match(name):
        raise ConfigError(
            field_name,
            name,
            "a pool name must start with a letter and hold only letters, digits and _",
        )


def _mapping_label(name: str) -> Callable[[str], str]:
    def label(key: str) -> str:
        return f"{name}.{key}"

    return label


def _env_label(prefix: str) -> Callable[[str], str]:
    def label(key: str) -> str:
        return prefix + key.upper()

    return label


def _unknown_rule(setting: str, label: Callable[[str], str]) -> str:
    candidates = sorted(k for k in _KNOWN_KEYS if k != "options")
    close = difflib.get_close_matches(setting, candidates, n=1)
    hint = f"; did you mean {label(close[0])}?" if close else ""
    return "unknown pool setting" + hint


def _build(
    name: str,
    values: dict[str, Any],
    defaults: Mapping[str, Any],
    *,
    label: Callable[[str], str],
) -> PoolSettings:
    for key in values:
        if key not in _KNOWN_KEYS:
            # Never echo the value of an unknown key: a misspelt "pasword" is still a secret.
            raise ConfigError(label(key), "<redacted>", _unknown_rule(key, label))

    dsn = _one_secret(values, ("dsn", "url"), ("dsn_file", "url_file"), label)
    password = _one_secret(values, ("password",), ("password_file",), label)

    backend = _backend(name, values.get("backend"), dsn, label)

    options = values.get("options", {})
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(label("options"), type(options).__name__, "must be a mapping of str keys")

    config_values = {key: values[key] for key in values if key in _CONFIG_FIELDS}
    merged_defaults = dict(defaults)
    merged_defaults.setdefault("name", name)
    try:
        config = PoolConfig.from_mapping(config_values, **merged_defaults)
    except ConfigError as exc:
        raise ConfigError(
            label(exc.field), config_values.get(exc.field, defaults.get(exc.field)), exc.rule
        ) from None
    return PoolSettings(
        name=name,
        backend=backend,
        config=config,
        dsn=dsn,
        password=password,
        options=dict(options),
    )


def _one_secret(
    values: Mapping[str, Any],
    inline_keys: tuple[str, ...],
    file_keys: tuple[str, ...],
    label: Callable[[str], str],
) -> Secret | None:
    present = [k for k in inline_keys + file_keys if k in values]
    if len(present) > 1:
        raise ConfigError(
            label(present[1]),
            "<redacted>",
            f"conflicts with {label(present[0])}: set only one of them",
        )
    if not present:
        return None
    key = present[0]
    raw = values[key]
    if isinstance(raw, Secret):
        return raw
    if key in inline_keys:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(label(key), raw, "must be a non-empty string")
        return Secret(raw)
    if not isinstance(raw, str | os.PathLike) or not str(raw):
        raise ConfigError(label(key), raw, "must be a file path")
    path = Path(raw)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        # The path is not secret; the value named by the setting may be, so it is never shown.
        raise ConfigError(
            label(key), "<redacted>", f"cannot read {str(path)!r}: {reason}"
        ) from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(label(key), "<redacted>", f"file {str(path)!r} is empty")
    return Secret(text)


def _backend(name: str, explicit: Any, dsn: Secret | None, label: Callable[[str], str]) -> str:
    scheme: str | None = None
    if dsn is not None:
        text = dsn.get_secret_value()
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ConfigError(label("dsn"), "<redacted>", f"not a valid URL ({exc})") from None
        scheme = parts.scheme.lower() or None
        if scheme is None or "//" not in text:
            raise ConfigError(
                label("dsn"), "<redacted>", "must be a URL such as scheme://user@host:port/path"
            )
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit:
            raise ConfigError(label("backend"), explicit, "must be a non-empty string")
        backend = explicit.lower() if "." not in explicit else explicit
        if "." not in backend and backend not in BACKENDS:
            raise ConfigError(
                label("backend"),
                explicit,
                f"unknown backend; expected one of {', '.join(BACKENDS)} or a module path",
            )
    elif name.lower() in BACKENDS:
        backend = name.lower()
    elif scheme is not None and scheme in _SCHEME_TO_BACKEND:
        backend = _SCHEME_TO_BACKEND[scheme]
    else:
        raise ConfigError(
            label("backend"),
            None,
            f"cannot tell which backend pool {name!r} uses: set it to one of {', '.join(BACKENDS)}",
        )
    if scheme is not None and backend in BACKENDS and scheme not in BACKENDS[backend]:
        expected = " or ".join(f"{s}://" for s in sorted(BACKENDS[backend]))
        raise ConfigError(
            label("dsn"),
            "<redacted>",
            f"scheme {scheme}:// does not match backend {backend!r} (expected {expected})",
        )
    return backend
