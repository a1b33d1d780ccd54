"""Settings, validated once at start.

Sources, strongest first: keyword overrides (command-line flags), environment
(``CARECALL_*``), an optional YAML file (``--config`` or ``CARECALL_CONFIG``), defaults.
Unset ``mqtt_url`` means the embedded broker, unset ``redis_url`` means in-memory fan-out,
and the database defaults to a SQLite file in the working folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_DIR = Path(__file__).resolve().parent


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARECALL_", extra="forbid", frozen=True)

    # --- connections -------------------------------------------------------------
    mqtt_url: str | None = Field(
        default=None,
        description="mqtt://user:password@host:port (or mqtts://); unset = embedded broker",
    )
    database_url: str = Field(
        default="sqlite:///carecall.db", description="SQLAlchemy URL: sqlite:///file or postgresql://"
    )
    redis_url: str | None = Field(default=None, description="redis://host:port/db; unset = in-memory")

    # --- identity of this process copy ------------------------------------------------
    instance: str = Field(
        default="1",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="name of this copy; gives a stable MQTT client id (persistent session)",
    )
    mqtt_shared_group: str = Field(
        default="carecall-gateway",
        description="shared-subscription group so gateway copies split the load; '' = plain subscribe",
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)

    # --- embedded / demo ------------------------------------------------------------
    embedded_mqtt_host: str = "127.0.0.1"
    embedded_mqtt_port: int = Field(default=1884, ge=1, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    speed: float = Field(default=1.0, gt=0, le=10_000, description="simulated time factor (demo/tests only)")

    # --- protocol limits -------------------------------------------------------------
    max_payload_bytes: int = Field(default=16 * 1024, ge=256)
    clock_skew_limit_s: float = Field(default=300.0, ge=0)
    reject_excerpt_bytes: int = Field(default=512, ge=16, le=16 * 1024)

    # --- gateway tuning -------------------------------------------------------------
    event_batch_max: int = Field(default=200, ge=1, le=10_000)
    state_flush_interval_s: float = Field(default=2.0, gt=0)
    supervision_interval_s: float = Field(default=5.0, gt=0)
    offline_after_intervals: int = Field(default=3, ge=1)

    # --- dispatcher ------------------------------------------------------------------
    dispatch_file: Path = Field(
        default=CONFIG_DIR / "dispatch.yaml", description="routing and priority settings"
    )
    escalation_file: Path = Field(default=CONFIG_DIR / "escalation.yaml", description="escalation policies")
    notifier: Literal["log", "webhook"] = "log"
    webhook_url: str | None = None
    timer_poll_s: float = Field(default=0.25, gt=0, le=10)

    # --- access ------------------------------------------------------------------------
    admin_password: SecretStr | None = Field(
        default=None, description="password of the first admin (else generated)"
    )
    secret_key: SecretStr | None = Field(default=None, description="token signing key shared by all copies")

    # --- files -----------------------------------------------------------------------
    rules_file: Path = Field(default=CONFIG_DIR / "rules.yaml")
    timezone: str = Field(default="Asia/Shanghai")

    # --- logging ---------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. mqtt://127.0.0.1:1883")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError("has a bad port") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
            raise ValueError("must be sqlite:///FILE or postgresql://USER@HOST/DB")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("rules_file", "dispatch_file", "escalation_file")
    @classmethod
    def _check_rules_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def embedded_broker(self) -> bool:
        return self.mqtt_url is None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by CARECALL_CONFIG (set by ``--config``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CARECALL_CONFIG")
        if not path:
            return {}
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise SettingsError(f"CARECALL_CONFIG: cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"CARECALL_CONFIG: {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"CARECALL_CONFIG: {path} must hold a mapping of settings")
        return {str(k).lower().removeprefix("carecall_"): v for k, v in data.items()}


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise SettingsError with one line naming the bad setting."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "_".join(str(p) for p in err.get("loc", ())) or "settings"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            raise SettingsError(f"unknown setting {name!r} (check your config file)") from exc
        raise SettingsError(f"bad setting CARECALL_{name.upper()}: {msg}") from exc
