"""zoo/export/private.py: the versions its private calls are written for are pyproject.toml's pins, and another
installed version stops zoo with one line saying which package and how to fix it."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

import pytest

from zoo.errors import VersionError, error_line
from zoo.export import private

from conftest import ROOT


def test_pins_are_pyproject_pins():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.fullmatch(r"([\w.-]+)==([\w.]+)", d).groups() for d in dependencies if "==" in d)
    assert {package: pins.get(package) for package in private.PINS} == private.PINS


def test_another_version_is_a_one_line_error(monkeypatch):
    private.validate_versions()  # the installed versions pass
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda package: "0.9.0" if package == "ai-edge-quantizer" else private.PINS[package],
    )
    with pytest.raises(VersionError) as err:
        private.validate_versions()
    line, status = error_line("zoo", err.value)
    assert status == 2 and "\n" not in line
    assert line == (
        "zoo: error [versions]: ai-edge-quantizer is 0.9.0, zoo's calls into its private API are written "
        "for 0.10.0: pip install ai-edge-quantizer==0.10.0 (or ./setup.sh)"
    )


def test_a_missing_package_is_named(monkeypatch):
    def version(package):
        raise importlib.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(VersionError, match=r"^tensorflow-cpu is not installed, .*pip install tensorflow-cpu==2\.21\.0"):
        private.validate_versions()
