"""Unit tests are pure: they must never start Ray (as Ray Serve's unit tests refuse it)."""

import pytest


@pytest.fixture(autouse=True)
def _refuse_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; move the test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
