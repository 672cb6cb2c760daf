-- Password reset by email (Auth, veil.auth.recovery). At most one pending reset per account: a new
-- request replaces the row, so an older code stops working. The code itself is never stored, only
-- SHA-256 over (id || code), where `id` is new with every request. A confirmed reset deletes the
-- row (single use); an expired one goes with the next request or the next clean-up.
CREATE TABLE password_resets (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    code_hash   bytea NOT NULL CHECK (length(code_hash) = 32),
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX password_resets_by_expiry ON password_resets (expires_at);

-- A password change ends every other session, a reset every session; the reason is kept so that
-- the account's owner can tell (export, session list history).
ALTER TABLE sessions DROP CONSTRAINT sessions_revoke_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoke_reason_check CHECK (
    revoke_reason IN (
        'logout', 'revoked', 'refresh_reuse', 'account_disabled', 'expired',
        'password_changed', 'password_reset'
    )
);
