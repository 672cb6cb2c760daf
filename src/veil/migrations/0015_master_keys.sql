-- Master keys and device certificates (issue 14). Each user has at most one master key, an Ed25519
-- public key made on the user's first device; it certifies the user's devices, so that clients
-- trust the user's own signature instead of the server's listing. Only public keys and signatures.

CREATE TABLE master_keys (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    master_key  bytea NOT NULL CHECK (length(master_key) = 32),
    created_at  timestamptz NOT NULL,
    changed_at  timestamptz NOT NULL
);

-- The master key's Ed25519 signature over `veil/device-certificate/v1` || user_id || device_id ||
-- identity_key || signing_key. It lives on the key row, so it goes with the device (session end)
-- and is cleared whenever the identity or signing key changes, and at a master-key reset.
ALTER TABLE device_keys ADD COLUMN certificate bytea CHECK (length(certificate) = 64);

-- A certification is a key change the user's contacts hear of (`keys_changed`), so that clients
-- share their group keys with the newly certified device; so is a new signing key, which ends the
-- certificate as a new identity key does.
ALTER TABLE key_changes DROP CONSTRAINT key_changes_change_check;
ALTER TABLE key_changes ADD CONSTRAINT key_changes_change_check CHECK (
    change IN ('device_added', 'identity_changed', 'signing_key_changed', 'signed_prekey_changed',
               'device_removed', 'device_certified')
);
