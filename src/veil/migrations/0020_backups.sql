-- Encrypted client backups (docs/adr/0021): one opaque object per user, encrypted by the client.
-- A row holds only the object's key, size, SHA-256 and timestamps; the bytes live in the object
-- store, uploaded and downloaded through presigned URLs like attachments.
--
-- A user has at most one `current` backup (the one GET /v1/backup serves) and at most one
-- `pending` upload (reserved by PUT, promoted by POST /v1/backup/complete). A row that no longer
-- belongs to anyone (replaced, deleted, or its user purged: `user_id` NULL) only waits for its
-- object to be deleted, then goes itself; a pending one waits until `expires_at`, because an
-- upload through its URL may still land, and the row must be there to have it swept.

CREATE TABLE backups (
    -- Random, 256 bits; carries no user id.
    object_key   text PRIMARY KEY,
    user_id      uuid REFERENCES users (id) ON DELETE SET NULL,
    state        text NOT NULL CHECK (state IN ('pending', 'current')),
    -- Of the ciphertext, as declared at reservation and verified by the store and at completion.
    size         bigint NOT NULL CHECK (size > 0),
    sha256       bytea NOT NULL CHECK (length(sha256) = 32),
    reserved_at  timestamptz NOT NULL,
    -- Pending only: once past, no upload through its URL can still be under way.
    expires_at   timestamptz,
    -- Current only: when the upload was completed (the backup's `created_at` on the wire).
    created_at   timestamptz,
    CHECK ((state = 'pending') = (expires_at IS NOT NULL)),
    CHECK ((state = 'current') = (created_at IS NOT NULL))
);
CREATE UNIQUE INDEX backups_one_pending_per_user ON backups (user_id) WHERE state = 'pending';
CREATE UNIQUE INDEX backups_one_current_per_user ON backups (user_id) WHERE state = 'current';
CREATE INDEX backups_pending_by_expiry ON backups (expires_at) WHERE state = 'pending';
CREATE INDEX backups_unowned ON backups (object_key) WHERE user_id IS NULL;
