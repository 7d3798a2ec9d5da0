"""Clients of txcoord's two gRPC services: ``CoordinatorClient`` (start, read and repair
transactions, failing over between coordinators) and ``ParticipantClient`` (call one
participant directly). Users import them from ``coordinator``; these modules may move.
"""
