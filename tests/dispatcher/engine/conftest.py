"""The ``setup`` fixture (a dispatcher over a small registry, tests/dispatcher/engine/support.py)
for every test of the dispatcher process."""

from tests.dispatcher.engine.support import setup  # noqa: F401  (a fixture)
