-- Encrypted attachments (File service). The bytes live in the object store under a random key;
-- this row holds only owner, conversation, size, digest, state and timestamps.

CREATE TABLE attachments (
    id               uuid PRIMARY KEY,
    -- Both references survive their target (SET NULL): an attachment whose owner or conversation
    -- is gone is due for removal, and the sweep deletes its object before its row, so no object
    -- is ever left without a row that points at it.
    owner_id         uuid REFERENCES users (id) ON DELETE SET NULL,
    conversation_id  uuid REFERENCES conversations (id) ON DELETE SET NULL,
    -- Random, at least 128 bits; carries no user, conversation or file name.
    object_key       text NOT NULL UNIQUE,
    -- Of the ciphertext, as declared at reservation and verified by the store and at completion.
    size             bigint NOT NULL CHECK (size > 0),
    sha256           bytea NOT NULL CHECK (length(sha256) = 32),
    state            text NOT NULL CHECK (state IN ('pending', 'complete')),
    created_at       timestamptz NOT NULL,
    -- Pending reservations only: when the sweep removes one that was never completed.
    expires_at       timestamptz,
    completed_at     timestamptz,
    CHECK ((state = 'pending') = (expires_at IS NOT NULL)),
    CHECK ((state = 'complete') = (completed_at IS NOT NULL))
);
CREATE INDEX attachments_by_owner ON attachments (owner_id, state);
CREATE INDEX attachments_by_conversation ON attachments (conversation_id);
CREATE INDEX attachments_pending_by_expiry ON attachments (expires_at) WHERE state = 'pending';
CREATE INDEX attachments_orphaned ON attachments (id) WHERE owner_id IS NULL OR conversation_id IS NULL;
