import pytest


@pytest.fixture(autouse=True)
def _through_the_http_processor(http_processor):
    """End-to-end and fault tests charge through the processor service over HTTP, as `make run` does."""
    return http_processor
