"""Exit 0 if the coordinator answers SERVING to a gRPC health check, else 1: the container
healthcheck (Dockerfile), without grpcurl or grpc_health_probe in the image.

    python -m coordinator.server.healthcheck [HOST:PORT]

Without an address it asks 127.0.0.1 on the port of TXC_LISTEN (default 7070), the address
the container's own ``txc serve`` listens on. Plaintext only: a coordinator serving TLS
needs a probe that holds its CA.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def local_address(listen: str) -> str:
    return f"127.0.0.1:{listen.rpartition(':')[2] or '7070'}"


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    address = argv[0] if argv else local_address(os.environ.get("TXC_LISTEN", "127.0.0.1:7070"))
    return 0 if serving(address) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
