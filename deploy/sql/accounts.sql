-- The account service's table (chaos/txcoord_chaos/workload/schema.py), with a few accounts.
-- The SDK's own tables (txc_barrier, ...) are created by the service at its start.
CREATE TABLE chaos_accounts (account VARCHAR(32) PRIMARY KEY, balance BIGINT NOT NULL);
CREATE TABLE chaos_ledger (
    id SERIAL PRIMARY KEY,
    transfer_id VARCHAR(64) NOT NULL,
    account VARCHAR(32) NOT NULL,
    amount BIGINT NOT NULL
);
CREATE INDEX ix_chaos_ledger_transfer_id ON chaos_ledger (transfer_id);
INSERT INTO chaos_accounts VALUES ('alice', 1000), ('bob', 1000), ('carol', 1000);
