-- Password reset by email (Auth, veil.auth.recovery). One row per request, keyed by its own id:
-- an account may hold a few live codes at once (the service keeps the newest five), so that
-- requests made by someone else for the address never void the code its owner asked for. The
-- code itself is never stored, only SHA-256 over (id || code). A confirmed reset deletes every row
-- of the account (single use); an expired row goes with the next request or the next clean-up.
CREATE TABLE password_resets (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   bytea NOT NULL CHECK (length(code_hash) = 32),
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX password_resets_by_user ON password_resets (user_id, created_at);
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
