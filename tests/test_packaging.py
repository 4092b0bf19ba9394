"""
Packaging: what the installed distribution carries, its metadata, and which
implementation it runs.

The slow part (sdist -> wheel -> fresh venv, and the whole suite on the
pure-Python reference installed with CDEFERRED_NO_EXTENSIONS=1) is in .ci/run;
these checks are fast and run against whatever cdeferred the tests import.
"""

import ast
import os
from importlib import metadata
from pathlib import Path

import pytest

import cdeferred

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(cdeferred.__file__).resolve().parent
NO_EXTENSIONS = os.environ.get("CDEFERRED_NO_EXTENSIONS", "") not in ("", "0")


def _installedDistribution():
    """
    The distribution the imported cdeferred was installed from.  Skip when
    cdeferred is imported from a source tree (``python -m pytest`` from the
    repository root after an in-place build), not from an installation: a
    source tree's cdeferred.egg-info, left by setuptools, is found too when
    the tree is on sys.path, but only an installer writes INSTALLER.
    """
    for distribution in metadata.distributions():
        if distribution.metadata["Name"] != "cdeferred":
            continue
        located = Path(distribution.locate_file("cdeferred/__init__.py")).resolve()
        if located == PACKAGE / "__init__.py" and distribution.read_text("INSTALLER"):
            return distribution
    pytest.skip(f"the tests import cdeferred from {PACKAGE}, not from an installation")


def test_implementationMatchesTheEnvironment():
    """The C core unless CDEFERRED_NO_EXTENSIONS=1 (conftest fails loudly when
    the extension is missing without it)."""
    assert cdeferred.IMPLEMENTATION == ("python" if NO_EXTENSIONS else "c")


@pytest.mark.skipif(
    not os.environ.get("CDEFERRED_EXPECT_IMPORT_FROM"),
    reason="set by .ci/run for the run against a venv installation only",
)
def test_importedFromTheExpectedInstallation():
    """In .ci/run's venv runs, the installed cdeferred is tested, not the copy
    in the directory the tests run from."""
    expected = Path(os.environ["CDEFERRED_EXPECT_IMPORT_FROM"]).resolve()
    assert expected in PACKAGE.parents, (PACKAGE, expected)


def test_versionIsReadableWithoutImporting():
    """pyproject.toml takes the version from cdeferred.__version__; setuptools
    reads it without importing the package (which needs Twisted, absent from
    the isolated build environment) only while it is a plain string literal
    assigned at the top level of __init__.py."""
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml next to the tests")
    text = pyproject.read_text()
    assert 'dynamic = ["version"]' in text
    assert 'version = {attr = "cdeferred.__version__"}' in text
    source = (ROOT / "cdeferred" / "__init__.py").read_text()
    literals = [
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [cdeferred.__version__]


def test_installedMetadata():
    distribution = _installedDistribution()
    meta = distribution.metadata
    assert distribution.version == cdeferred.__version__
    assert meta["Requires-Python"] == ">=3.9"
    assert meta["License-Expression"] == "MIT"
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert meta["Description-Content-Type"] == "text/markdown"
    # The README is the long description.
    assert (meta.get_payload() or meta["Description"] or "").lstrip().startswith("# cdeferred")
    requirements = distribution.requires or []
    assert any(r.replace(" ", "").startswith("Twisted>=") for r in requirements), requirements
    # Tools for the tests only, never for users.
    for tool in ("mypy", "pytest", "hypothesis", "build"):
        runtime = [r for r in requirements if r.startswith(tool) and "extra ==" not in r]
        assert not runtime, runtime


def test_installedFiles():
    """The wheel put the typing files, the licence and, unless built without
    extensions, the compiled core in place."""
    distribution = _installedDistribution()
    files = {str(path).replace(os.sep, "/") for path in distribution.files or []}
    for name in ("cdeferred/py.typed", "cdeferred/__init__.pyi", "cdeferred/web.pyi"):
        assert name in files, name
    assert any(name.endswith("/LICENSE") and ".dist-info/" in name for name in files), files
    extensions = [name for name in files if name.startswith("cdeferred/_cdeferred")]
    if NO_EXTENSIONS:
        # Installed with CDEFERRED_NO_EXTENSIONS=1 too (.ci/run's venv): nothing compiled.
        if os.environ.get("CDEFERRED_EXPECT_IMPORT_FROM"):
            assert extensions == [], extensions
    else:
        assert len(extensions) == 1, extensions
