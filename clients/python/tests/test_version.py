"""The package version is the Rust workspace's, as the project's clients must be."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import herald

ROOT = Path(__file__).resolve().parents[3]


def _workspace_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.M)
    assert match, "no version in [workspace.package]"
    return match.group(1)


def test_version_matches_the_workspace():
    pyproject = (ROOT / "clients" / "python" / "pyproject.toml").read_text()
    declared = re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.M)
    assert declared and declared.group(1) == _workspace_version() == herald.__version__


def test_the_package_is_typed():
    assert (Path(herald.__file__).parent / "py.typed").exists()
    assert sys.version_info >= (3, 10)
