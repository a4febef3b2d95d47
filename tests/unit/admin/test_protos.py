"""The committed admin API modules are generated from protos/authz_admin.proto as it is now."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2

from authz_server.admin import authz_admin_pb2

ROOT = Path(__file__).resolve().parents[3]


def test_generated_descriptor_matches_proto(tmp_path: Path) -> None:
    """Compiling the .proto gives exactly the descriptor in the committed module (`make protos`)."""
    out = tmp_path / "admin.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iauthz_server/admin=protos",
         f"--descriptor_set_out={out}", "protos/authz_admin.proto"],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    [compiled] = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    _strip_json_names(compiled.message_type)  # the Python generator drops them
    assert compiled.name == "authz_server/admin/authz_admin.proto"
    assert compiled.SerializeToString() == authz_admin_pb2.DESCRIPTOR.serialized_pb


def _strip_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for message_field in message.field:
            message_field.ClearField("json_name")
        _strip_json_names(message.nested_type)


def test_service_methods() -> None:
    """The admin service offers exactly the calls docs/operations/admin-api.md#calls names."""
    service = authz_admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    assert service.full_name == "authz.admin.v1.AdminService"
    assert [m.name for m in service.methods] == [
        "Explain", "ListApprovals", "Approve", "Reject",
        "Revoke", "Unrevoke", "ListRevocations", "GetPolicy",
    ]  # fmt: skip
