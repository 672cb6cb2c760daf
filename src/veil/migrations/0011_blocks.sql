-- Blocks (veil.blocks, served by the account process): a blocked user cannot invite the blocker,
-- start a direct conversation with them (404, as for a user who does not exist) or queue device
-- messages for their devices (accepted and dropped). The primary key orders `GET /v1/blocks`;
-- either account's erasure removes the row.
CREATE TABLE blocks (
    blocker_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
-- "Who blocked this sender?" for a device-message send to many devices, and the cascade when a
-- blocked account is purged (single lookups use the primary key).
CREATE INDEX blocks_by_blocked ON blocks (blocked_id, blocker_id);
