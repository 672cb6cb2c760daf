-- Identity and sessions (Auth service).
-- Personal data here: users.email, sessions.ip, sessions.user_agent, sessions.device_name.

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    -- Normalised (see veil.auth.emails); unique among accounts that exist.
    email           text NOT NULL,
    -- Argon2id PHC string; never the password.
    password_hash   text NOT NULL,
    role            text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'operator')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'disabled')),
    email_verified  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);

-- A session is one login on one device; it is also the device identity for keys.
CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name     text,
    ip              inet,
    user_agent      text,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    -- Absolute end of the refresh lifetime: created_at + 30 days, never extended.
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text CHECK (revoke_reason IN ('logout', 'revoked', 'refresh_reuse', 'account_disabled', 'expired'))
);
CREATE INDEX sessions_active_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- Every refresh token a session was ever given, by SHA-256 only. A token is consumed by setting
-- used_at atomically; presenting a consumed one is reuse and revokes the session.
CREATE TABLE refresh_tokens (
    token_hash      bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id      uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at       timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
