-- Data-subject rights (Account service): email challenges, erasure with a grace window, export
-- archives waiting in the object store, and the tombstones erasure leaves.

-- Erasure: the account is disabled at once and purged after the grace window.
ALTER TABLE users
    ADD COLUMN disabled_at  timestamptz,
    ADD COLUMN purge_after  timestamptz,
    ADD CONSTRAINT users_purge_needs_disabled CHECK (purge_after IS NULL OR status = 'disabled');
CREATE INDEX users_due_for_purge ON users (purge_after) WHERE purge_after IS NOT NULL;

-- One request per challenge. The code is stored as SHA-256 over (request id || code) only; it is
-- single use (confirmed_at), expires, and allows a few attempts.
CREATE TABLE account_requests (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type          text NOT NULL CHECK (type IN ('export', 'erasure', 'email_change')),
    -- email_change only: where the code went, and the address that replaces the old one.
    new_email     text CHECK ((type = 'email_change') = (new_email IS NOT NULL)),
    code_hash     bytea NOT NULL CHECK (length(code_hash) = 32),
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    confirmed_at  timestamptz
);
CREATE INDEX account_requests_by_user ON account_requests (user_id, created_at);

-- Export archives (JSON) in the object store, until their download URL has expired. A row whose
-- user is gone (SET NULL) is removed with its object by the maintenance round.
CREATE TABLE export_archives (
    object_key  text PRIMARY KEY,
    user_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX export_archives_by_expiry ON export_archives (expires_at);
CREATE INDEX export_archives_by_user ON export_archives (user_id);

-- What an erasure leaves behind: that an account was erased, and when. No id, no email, nothing
-- that leads back to the person (docs/privacy.md).
CREATE TABLE erasure_tombstones (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at  timestamptz NOT NULL,
    purged_at     timestamptz NOT NULL
);

-- Retention deletes by age across all conversations and sessions.
CREATE INDEX messages_by_created_at ON messages (created_at);
CREATE INDEX sessions_ended ON sessions (coalesce(revoked_at, expires_at));
