"""The committed lclusterd/rpc modules are what `make proto` generates from the .proto now."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["lclusterd_pb2.py", "lclusterd_pb2_grpc.py", "lclusterd_pb2.pyi"]


def test_generated_modules_are_current(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", "proto", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", "proto/lclusterd/rpc/lclusterd.proto"],
                   cwd=ROOT, check=True)
    for name in GENERATED:
        fresh = (tmp_path / "lclusterd" / "rpc" / name).read_text()
        committed = (ROOT / "lclusterd" / "rpc" / name).read_text()
        assert fresh == committed, f"lclusterd/rpc/{name} is stale: run `make proto`"


def test_generated_modules_import_as_a_package():
    from lclusterd.rpc import lclusterd_pb2, lclusterd_pb2_grpc

    assert lclusterd_pb2.DESCRIPTOR.package == "lclusterd.v1"
    assert hasattr(lclusterd_pb2_grpc, "JobsStub")
