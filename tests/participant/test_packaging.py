"""Installing txcoord (the SDK ships in it) prints no setuptools deprecation: the licence is
an SPDX expression, which the setuptools the build requires understands."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_metadata_prints_no_deprecation(tmp_path: Path) -> None:
    build = f"from setuptools import build_meta as b; b.prepare_metadata_for_build_wheel({str(tmp_path)!r})"
    built = subprocess.run([sys.executable, "-W", "default", "-c", build], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=True)
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr
    metadata = next(tmp_path.glob("txcoord-*.dist-info")) / "METADATA"
    assert "License-Expression: Apache-2.0" in metadata.read_text().splitlines()


def test_the_build_requires_a_setuptools_that_reads_spdx_licences() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = next(Requirement(r) for r in pyproject["build-system"]["requires"]
                      if Requirement(r).name == "setuptools")
    assert not setuptools.specifier.contains(Version("76.9")) and setuptools.specifier.contains("77.0")
