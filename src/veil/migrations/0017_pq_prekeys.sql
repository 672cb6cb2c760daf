-- Post-quantum prekeys (issue 15, PQXDH): ML-KEM-768 encapsulation keys (1184 bytes), each signed
-- by the device's Ed25519 signing key over `veil/pq-prekey/v1` || key_id (u32 BE) || public_key,
-- so that the server cannot substitute them. Public keys only. Both tables hang off device_keys, so
-- whatever removes a device (session end, logout, erasure) removes its PQ prekeys in the same
-- statement; a new signing key drops them too (the service), as their signatures no longer verify.

-- One last-resort key per device: handed out when no one-time PQ key can be, kept until replaced.
CREATE TABLE pq_last_resort_prekeys (
    device_id   uuid PRIMARY KEY REFERENCES device_keys (device_id) ON DELETE CASCADE,
    key_id      bigint NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    public_key  bytea NOT NULL CHECK (length(public_key) = 1184),
    signature   bytea NOT NULL CHECK (length(signature) = 64),
    created_at  timestamptz NOT NULL
);

-- One-time PQ keys, handed out oldest first (by upload order) and deleted as they are handed out
-- (unlike the 32-byte classical ones, a spent 1184-byte key is not worth keeping).
CREATE TABLE pq_one_time_prekeys (
    device_id   uuid NOT NULL REFERENCES device_keys (device_id) ON DELETE CASCADE,
    key_id      bigint NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    public_key  bytea NOT NULL CHECK (length(public_key) = 1184),
    signature   bytea NOT NULL CHECK (length(signature) = 64),
    upload_seq  bigint GENERATED ALWAYS AS IDENTITY,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, key_id)
);
CREATE INDEX pq_one_time_prekeys_by_upload ON pq_one_time_prekeys (device_id, upload_seq);
