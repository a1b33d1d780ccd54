"""The operator console: static pages (plain ES modules, no build step) served by the
same FastAPI app, so it works on a station network with no internet."""

from dispatcher.console.pages import STATIC_DIR, mount_console

__all__ = ["STATIC_DIR", "mount_console"]
