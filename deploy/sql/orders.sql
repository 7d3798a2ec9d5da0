-- The order service's table (chaos/txcoord_chaos/workload/schema.py). The SDK's own tables
-- (txc_barrier, txc_xa, ...) are created by the service at its start.
CREATE TABLE chaos_orders (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    transfer_id VARCHAR(64) NOT NULL,
    account VARCHAR(32) NOT NULL,
    amount BIGINT NOT NULL,
    INDEX ix_chaos_orders_transfer_id (transfer_id)
);
