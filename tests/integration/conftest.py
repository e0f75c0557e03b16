import pytest

from tests.observability import jaeger, prometheus

__all__ = ["jaeger", "prometheus"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)
