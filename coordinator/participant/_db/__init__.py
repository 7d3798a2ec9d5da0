"""Database plumbing shared by the barrier, the outbox and 2PC: DSNs and engines, the
statements that differ between PostgreSQL and MySQL/MariaDB, the session guard, the table
definitions and their migrations, error classification, and retry backoff.

Private: service code imports what it needs from ``coordinator.participant``.
"""
