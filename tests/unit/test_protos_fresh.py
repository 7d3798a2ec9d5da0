"""The committed generated code must match protos/ (regenerate: python scripts/gen_protos.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    committed = ROOT / "coordinator" / "_proto" / "txc" / "v1"
    fresh = tmp_path / "txc" / "v1"
    names = sorted(p.name for p in fresh.glob("*_pb2*"))
    assert names == sorted(p.name for p in committed.glob("*_pb2*"))
    stale = [n for n in names if (fresh / n).read_text() != (committed / n).read_text()]
    assert not stale, f"stale generated files {stale}: run python scripts/gen_protos.py"
