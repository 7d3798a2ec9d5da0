// The tables of docs/participants.md, created if missing: the same as `txc migrate` makes on
// PostgreSQL, so a database it migrated works as is. And the service's own balances.
'use strict';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS txc_barrier (
  id BIGSERIAL PRIMARY KEY,
  gid VARCHAR(128) NOT NULL,
  branch VARCHAR(128) NOT NULL,
  op VARCHAR(16) NOT NULL,
  reason VARCHAR(32) NOT NULL,
  outcome SMALLINT,
  result BYTEA,
  message VARCHAR(512),
  created_at TIMESTAMPTZ NOT NULL,
  CONSTRAINT uq_txc_barrier_key UNIQUE (gid, branch, op)
);
CREATE INDEX IF NOT EXISTS ix_txc_barrier_created_at ON txc_barrier (created_at);
CREATE TABLE IF NOT EXISTS txc_xa (
  xid VARCHAR(64) PRIMARY KEY,
  gid VARCHAR(128) NOT NULL,
  branch VARCHAR(128) NOT NULL,
  operation VARCHAR(128) NOT NULL,
  state VARCHAR(16) NOT NULL,
  message VARCHAR(512),
  result BYTEA,
  created_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_txc_xa_updated_at ON txc_xa (updated_at);
CREATE TABLE IF NOT EXISTS balances (
  account VARCHAR(64) PRIMARY KEY,
  amount BIGINT NOT NULL
);`;

module.exports = { SCHEMA };
