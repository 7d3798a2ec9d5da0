"""The money-transfer workload: an account service (PostgreSQL) and an order service
(MariaDB/MySQL), both real participant processes built on coordinator.participant."""
