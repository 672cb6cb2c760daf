-- Blocks (Account service): the blocker no longer hears from the blocked user. A blocked user
-- cannot invite the blocker, start a direct conversation with them (404, as for a user who does
-- not exist) or queue device messages for their devices (accepted and dropped).
CREATE TABLE blocks (
    blocker_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
-- "Who blocked this sender?" on every invitation, direct conversation and device-message send.
CREATE INDEX blocks_by_blocked ON blocks (blocked_id, blocker_id);
