"""CareCall configuration: settings from environment/YAML, and the bundled YAML defaults.

The YAML files beside this module (telemetry rules, scenarios, later escalation policies)
are the defaults; any of them can be replaced by pointing a setting at another file.
"""

from config.settings import CONFIG_DIR, Settings, SettingsError, load_settings

__all__ = ["CONFIG_DIR", "Settings", "SettingsError", "load_settings"]
