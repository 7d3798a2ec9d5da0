"""Helpers shared by the test suites: real databases (``databases``), coordinators on a
private etcd (``coordinators``), killable child processes (``processes``), and the pytest
fixtures built on them (``fixtures``, registered by tests/conftest.py)."""
