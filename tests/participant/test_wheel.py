"""An installed txcoord wheel works outside the checkout: ``txc migrate`` finds its
migrations, the chaos harness imports under its own name, and no generic top-level
package ("chaos", "migrations") is installed."""

from __future__ import annotations

import asyncio
import site
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.participant._db.migrations import head_revision
from tests.support.databases import SERVERS, create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding the wheel (dependencies come from the test venv, read-only)."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(work / "dist"), str(ROOT)], check=True, cwd=work)
    wheel = next((work / "dist").glob("txcoord-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Dependencies from this venv's site-packages, without processing its .pth files (which
    # hold the editable install of the checkout).
    Path(purelib, "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, cwd=work)
    yield venv
    assert zipfile.is_zipfile(wheel)


def test_the_wheel_holds_its_packages_under_txcoord_names(installed: Path) -> None:
    wheel = next(installed.parent.glob("dist/txcoord-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"coordinator", "txcoord_chaos"} <= tops
    assert not tops & {"chaos", "migrations", "txcoord_migrations", "tests", "bench"}
    files = zipfile.ZipFile(wheel).namelist()
    scripts = "coordinator/participant/_db/alembic/"
    assert {scripts + "env.py", scripts + "script.py.mako"} <= set(files)
    assert any(f.startswith(scripts + "versions/0001_") for f in files)


def test_installed_modules_come_from_the_venv_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import coordinator, txcoord_chaos.runner; "
         "from coordinator.participant._db.migrations import migrations_dir; "
         "print(coordinator.__file__); print(migrations_dir())"],
        check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert all(str(installed) in path for path in where), where


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_txc_migrate_from_the_installed_wheel(installed: Path, tmp_path: Path, kind: str) -> None:
    name = f"txc_wheel_{uuid.uuid4().hex[:8]}"
    dsn = asyncio.run(create_database(SERVERS[kind], name))
    try:
        txc = str(installed / "bin" / "txc")
        up = subprocess.run([txc, "migrate", "--dsn", dsn], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
        assert up.returncode == 0, up.stderr
        status = subprocess.run([txc, "migrate", "--dsn", dsn, "--status"], capture_output=True,
                                text=True, cwd=tmp_path, timeout=60)
        assert status.returncode == 0 and f"at revision {head_revision()} (head)" in status.stdout
    finally:
        asyncio.run(drop_database(SERVERS[kind], name))
