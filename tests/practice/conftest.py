"""Practice on the real engine: the stack lock, the images, a compose project of this
test's own (COMPOSE_PROJECT_NAME), brought down with its volumes at teardown."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.rehearsal.instance import PROJECT_PREFIX, remove_project
from tests.support.docker import ensure_images, stack_lock

# A socket nothing listens on: `docker info` then fails as on a machine without an engine.
NO_ENGINE = "unix:///nonexistent/elematrix-no-engine.sock"


@pytest.fixture
def practice_project() -> Iterator[str]:
    """The compose project practice's stack runs as (the lock held while it lives)."""
    ensure_images()
    project = f"{PROJECT_PREFIX}-practice-{uuid.uuid4().hex[:8]}"
    with stack_lock():
        try:
            yield project
        finally:
            remove_project(project)
