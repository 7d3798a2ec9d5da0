"""Typing alias for grpc.aio servicer contexts."""

from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
