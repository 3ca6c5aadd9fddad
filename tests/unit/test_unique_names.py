"""pytest imports test modules by basename (rootdir-relative, no packages): two test files of one
name in tests/unit and tests/integration break collection of the whole suite."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique():
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
