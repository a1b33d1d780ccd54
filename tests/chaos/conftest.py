"""The chaos suite uses the integration suite's real services (and its CI rule that a
skipped test is a failed one)."""

from tests.integration.conftest import (  # noqa: F401  (fixtures and the CI hook, re-exported)
    mosquitto,
    pg_maker,
    pg_url,
    pytest_runtest_makereport,
    redis_url,
)
