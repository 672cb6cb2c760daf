-- Conversations, membership, messages and receipts (Messaging service).
-- Messages hold only the envelope: ciphertext, nonce, tag and metadata.

CREATE TABLE conversations (
    id              uuid PRIMARY KEY,
    type            text NOT NULL CHECK (type IN ('direct', 'group')),
    -- Increases by one whenever the set of joined members changes; senders must use it.
    epoch           integer NOT NULL DEFAULT 0,
    -- The last assigned message seq: the row lock on it serialises senders, so seq is gap-free
    -- and strictly increasing in commit order.
    last_seq        bigint NOT NULL DEFAULT 0,
    -- For direct conversations: the two user ids in order, so that a pair has at most one.
    direct_pair     text UNIQUE,
    encrypted_meta  bytea,
    created_at      timestamptz NOT NULL
);

CREATE TABLE members (
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    state            text NOT NULL CHECK (state IN ('invited', 'joined')),
    -- Messages up to this seq were sent before the member joined: not theirs to read.
    joined_after_seq bigint NOT NULL DEFAULT 0,
    invited_by       uuid,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conversation_id);

CREATE TABLE messages (
    conversation_id   uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               bigint NOT NULL,
    message_id        uuid NOT NULL,
    sender_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sender_device_id  uuid NOT NULL,
    content_type      text NOT NULL,
    ciphertext        bytea NOT NULL,
    nonce             bytea NOT NULL,
    auth_tag          bytea NOT NULL,
    parent_id         uuid,
    key_epoch         integer NOT NULL,
    -- SHA-256 over the envelope as sent, to tell a retry (same content) from a conflict.
    envelope_digest   bytea NOT NULL,
    created_at        timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    -- Idempotency: one message per (sender, message_id), enforced by the database.
    CONSTRAINT messages_sender_message_id_key UNIQUE (sender_id, message_id)
);
CREATE INDEX messages_by_time ON messages (conversation_id, created_at);

-- Delivered/read receipts: metadata only, monotonic per (conversation, user, type).
CREATE TABLE receipts (
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type             text NOT NULL CHECK (type IN ('delivered', 'read')),
    up_to_seq        bigint NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, user_id, type)
);

-- What each device has acknowledged, per conversation: replay starts after it.
CREATE TABLE device_cursors (
    device_id        uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    acked_seq        bigint NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
);

-- Membership changes, one row per change, delivered to the members as `membership` events.
CREATE TABLE membership_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('created', 'invited', 'joined', 'declined', 'left', 'removed')),
    actor_id         uuid,
    subject_id       uuid NOT NULL,
    epoch            integer NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE INDEX membership_events_by_conversation ON membership_events (conversation_id, id);

-- Single-use WebSocket tickets for browsers (30 s), stored as SHA-256 only.
CREATE TABLE ws_tickets (
    ticket_hash  bytea PRIMARY KEY CHECK (length(ticket_hash) = 32),
    session_id   uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL
);
