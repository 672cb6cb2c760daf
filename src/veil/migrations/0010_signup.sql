-- Sign-up verification, invitations and known devices (Auth service; docs/adr/0015).

-- A sign-up waiting for its emailed code. No account exists until a code is confirmed, so an
-- address that never answers leaves nothing but these rows, which expire. Each request is a row of
-- its own with its own password hash and code: a later request for the same address (perhaps by
-- someone else) neither replaces nor cancels an earlier one, and a code only ever creates the
-- account with the password of the request it was mailed for. Codes are stored only as SHA-256
-- over (id || code); they work once (every row of the address goes when one is confirmed), expire
-- and allow few attempts (a wrong code counts against every live row of the address).
CREATE TABLE signups (
    id             uuid PRIMARY KEY,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    code_hash      bytea NOT NULL CHECK (length(code_hash) = 32),
    invite_id      uuid,
    attempts       integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX signups_by_email ON signups (email, created_at);
CREATE INDEX signups_by_expiry ON signups (expires_at);

-- Invitations for VEIL_REGISTRATION=invite, made from a shell (`veil invites create`). The code is
-- shown once and stored only as SHA-256; each account created with it uses it up by one.
CREATE TABLE invites (
    id          uuid PRIMARY KEY,
    code_hash   bytea NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    uses_left   integer NOT NULL CHECK (uses_left >= 0),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
-- A sign-up made with an invite dies with it: a spent or expired invite creates no more accounts.
ALTER TABLE signups ADD FOREIGN KEY (invite_id) REFERENCES invites (id) ON DELETE CASCADE;

-- Known devices for the failed-login lock-out: a successful login hands out an opaque token (only
-- its SHA-256 is kept); a later login that presents it is not subject to the account-wide
-- lock-out, so nobody else's failures keep the owner's devices out (docs/adr/0015).
CREATE TABLE device_tokens (
    token_hash    bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX device_tokens_by_user ON device_tokens (user_id);
CREATE INDEX device_tokens_by_expiry ON device_tokens (expires_at);
