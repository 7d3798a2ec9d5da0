"""Generate the Python modules for protos/txc/v1 into coordinator/_proto/txc/v1.

The generated files are committed so that an install needs no code generator;
tests/unit/test_protos_fresh.py fails when they drift from the .proto sources.
Usage: python scripts/gen_protos.py [OUT_DIR]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
DEFAULT_OUT = ROOT / "coordinator" / "_proto"


def generate(out_dir: Path) -> list[Path]:
    import grpc_tools  # dev dependency: imported only when generating

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    target = out_dir / "txc" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside python
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    # protoc forks its plugins. Run it in a process of its own: forking from a caller that
    # has live gRPC threads (a pytest run, say) can crash the child (seen: SIGSEGV in
    # protoc-gen-mypy_grpc after "Other threads are currently calling into gRPC").
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"protoc failed ({done.returncode}): {done.stderr.strip()}")
    written = sorted(target.glob("*_pb2*.py*"))
    for path in written:
        # protoc writes absolute imports ("from txc.v1 import x_pb2"); the package lives
        # under coordinator._proto, so make them relative.
        text = re.sub(r"^from txc\.v1 import", "from . import", path.read_text(), flags=re.M)
        path.write_text(text)
    for pkg in (out_dir / "txc", target):
        (pkg / "__init__.py").touch()
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for p in generate(out):
        print(p.relative_to(out))
