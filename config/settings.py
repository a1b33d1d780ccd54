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
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.types import TimeZoneName

# The dispatcher's loops (dispatcher/engine/process.py; the stall monitor watches each:
# dispatcher/health/stall.py LOOPS is this tuple).
DISPATCHER_LOOPS = ("intake", "timers", "outbox", "watchdog", "visits", "order_levels")

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
    mqtt_admin_url: str | None = Field(
        default=None,
        description="mqtt://carecall-broker-admin:password@host:port: Mosquitto's dynamic-security "
        "admin account (written by broker-config); set on the gateway, disabled or re-keyed "
        "devices are refused and disconnected at once",
    )

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
    gateway_lane: Literal["all", "events", "readings"] = Field(
        default="all",
        description="what `carecall gateway` serves: all, events (alarms: events, status, wills, "
        "acks) or readings (telemetry); run events and readings as separate processes "
        "(device_gateway/lanes.py, docs/operations.md)",
    )
    cpu_priority: str = Field(
        default="auto",
        description="CPU priority of `carecall gateway`/`dispatcher`/`serve`: auto (events lane "
        "nice -10, dispatcher and web -5, readings lane +10; a raise needs CAP_SYS_NICE, e.g. "
        "systemd Nice=), off (as started) or a nice value from -20 to 19 (carecall/core/priority.py)",
    )
    gc_freeze: bool = Field(
        default=True,
        description="`carecall gateway`/`dispatcher`/`serve`/`demo`: once started, collect and freeze "
        "the startup heap out of later garbage collections, so none stops the process for long "
        "(carecall/core/heap.py); every pause is timed in carecall_gc_pause_seconds",
    )
    readings_shed_above: int = Field(
        default=5_000,
        ge=1,
        description="queued readings past which a device's new reading is merged into its waiting one",
    )
    readings_drop_above: int = Field(
        default=50_000,
        ge=1,
        description="queued readings past which a reading with nothing to merge into is dropped (counted)",
    )

    # --- dispatcher ------------------------------------------------------------------
    dispatch_file: Path = Field(
        default=CONFIG_DIR / "dispatch.yaml", description="routing and priority settings"
    )
    escalation_file: Path = Field(default=CONFIG_DIR / "escalation.yaml", description="escalation policies")
    notifier: Literal["log", "webhook"] = "log"
    webhook_url: str | None = None
    # config/notifications.yaml (or another file like it): the SMS, voice, robot and e-mail
    # channels and the purposes routed through them (docs/notifications.md). Unset: every
    # notification goes to the notifier above, and pages reach the responder app only.
    notifications_file: Path | None = Field(
        default=None, description="notification channels (SMS, voice, robots, e-mail); unset = notifier only"
    )
    # The address people outside the control room reach CareCall at (https://…), for the
    # links in family contacts' messages (/f/…). Unset: the links are paths only.
    public_url: str | None = Field(default=None, description="https://… base of family links")
    timer_poll_s: float = Field(default=0.25, gt=0, le=10)
    # Which of the dispatcher's loops this copy runs. "all" (default), or some of them, so
    # that the alarm lane (intake: stored event → call → consoles) has a process of its
    # own and never waits for an event-loop turn behind a storm's timers or the outbox.
    # Every loop must run in at least one copy (docs/operations.md).
    dispatcher_loops: str = Field(
        default="all",
        description="all, or a comma list of " + ", ".join(DISPATCHER_LOOPS) + " (a copy per lane)",
    )

    # --- stall alarm (dead man's switch over dispatch; docs/operations.md) ----------------
    stall_check_s: float = Field(
        default=2.0, gt=0, le=60, description="how often each process checks for a stall"
    )
    stall_intake_s: float = Field(
        default=15.0, gt=0, description="a stored event not taken into a call for this long is a stall"
    )
    stall_timers_s: float = Field(default=10.0, gt=0, description="an escalation timer this late is a stall")
    stall_acks_s: float = Field(default=30.0, gt=0, description="a device ack pending this long is a stall")
    stall_notifications_s: float = Field(
        default=30.0, gt=0, description="a notification overdue this long is a stall"
    )
    stall_loop_s: float = Field(
        default=30.0, gt=0, description="a dispatcher loop (intake, timers, outbox) idle this long is a stall"
    )
    stall_watchdog_loop_s: float = Field(
        default=120.0, gt=30, description="the watchdog loop (runs every 30 s) idle this long is a stall"
    )

    # --- access ------------------------------------------------------------------------
    admin_password: SecretStr | None = Field(
        default=None, description="password of the first admin (else generated)"
    )
    secret_key: SecretStr | None = Field(default=None, description="token signing key shared by all copies")
    login_max_failures: int = Field(
        default=5, ge=1, le=1000, description="consecutive failed sign-ins that lock an account"
    )
    login_lock_s: int = Field(
        default=900, ge=1, le=7 * 86_400, description="how long a locked account stays locked"
    )
    login_throttle_ip: str = Field(
        default="30/minute", description="failed sign-ins allowed per client address (limits syntax)"
    )
    login_throttle_user: str = Field(
        default="10/minute", description="failed sign-ins allowed per username, known or not (limits syntax)"
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest accepted HTTP request body (413 above)"
    )

    # --- files -----------------------------------------------------------------------
    rules_file: Path = Field(default=CONFIG_DIR / "rules.yaml")
    basemap_file: Path | None = Field(
        default=None,
        description="streets under the console's map: a PMTiles archive of PNG/JPEG/WebP tiles of "
        "this county, served at /console/basemap.pmtiles; unset = the demo county's generated map",
    )
    timezone: TimeZoneName = Field(default="Asia/Shanghai")

    # --- logging ---------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @model_validator(mode="after")
    def _check_shedding(self) -> Settings:
        if self.readings_drop_above < self.readings_shed_above:
            raise ValueError("readings_drop_above must be at least readings_shed_above")
        return self

    @field_validator("mqtt_url", "mqtt_admin_url")
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

    @field_validator("cpu_priority", mode="before")
    @classmethod
    def _check_cpu_priority(cls, raw: object) -> str:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ValueError("must be auto, off or a nice value from -20 to 19")
        value = str(raw).strip().lower()
        if value in ("auto", "off"):
            return value
        try:
            nice = int(value)
        except ValueError:
            raise ValueError("must be auto, off or a nice value from -20 to 19") from None
        if not -20 <= nice <= 19:
            raise ValueError("must be auto, off or a nice value from -20 to 19")
        return str(nice)

    @field_validator("dispatcher_loops")
    @classmethod
    def _known_loops(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        if names == ["all"]:
            return "all"
        unknown = [n for n in names if n not in DISPATCHER_LOOPS]
        if not names or unknown:
            raise ValueError(
                f"all, or some of {', '.join(DISPATCHER_LOOPS)}; not {', '.join(unknown) or 'nothing'}"
            )
        return ",".join(n for n in DISPATCHER_LOOPS if n in names)

    @property
    def dispatcher_loop_set(self) -> frozenset[str]:
        """The loops this dispatcher copy runs."""
        if self.dispatcher_loops == "all":
            return frozenset(DISPATCHER_LOOPS)
        return frozenset(self.dispatcher_loops.split(","))

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

    @field_validator("login_throttle_ip", "login_throttle_user")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError("must be a rate like 30/minute or 100/hour") from exc
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
