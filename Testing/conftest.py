"""Shared pytest fixtures.

Slicer Logic tests run on a real MRML scene: trame-slicer's standalone Slicer
(``trame-slicer[standalone]``, Kitware's wheels of Slicer's MRML and logics),
bound to ``slicer.mrmlScene``/``slicer.app``/``slicer.modules`` by
:mod:`mskai_slicer.environment`.  Tests that use the ``mrml_scene`` fixture are
marked ``slicer`` automatically (``pytest -m "not slicer"`` skips them).
"""
from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slicer: runs on a real MRML scene of trame-slicer's standalone Slicer")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mrml_scene" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slicer)


@pytest.fixture(scope="session")
def standalone_slicer():
    """Binds the standalone Slicer once per session; skips (with the reason)
    only when the ``slicer`` package itself cannot be imported."""
    try:
        import slicer  # noqa: F401
    except ImportError as error:
        pytest.skip(f"Slicer's Python packages are not installed (pip install "
                    f"'trame-slicer[standalone]==2.0.0'): {error}")
    from mskai_slicer.environment import bind_standalone_slicer

    return bind_standalone_slicer()


@pytest.fixture
def mrml_scene(standalone_slicer):
    """``slicer.mrmlScene``, cleared for this test."""
    from mskai_slicer.environment import new_scene

    return new_scene()


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """A per-test MSKAI_HOME (installed bundles, caches, result folders); returns its path.
    Test files that want it for every test say ``pytestmark = pytest.mark.usefixtures("user_cache")``."""
    home = tmp_path / "mskai-home"
    monkeypatch.setenv("MSKAI_HOME", str(home))
    return home
