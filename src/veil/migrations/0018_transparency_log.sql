-- Key transparency (issue 16, docs/adr/0019): an append-only Merkle log (RFC 9162 hashing) of every
-- change to a user's master key or set of certified devices.
--
-- A leaf is 104 bytes, all fixed width (`veil.transparency.leaf` builds the same bytes in Python):
--   SHA-256('veil/transparency/user/v1' || user_id as 16 raw bytes)     32
--   version: the user's leaf count so far, from 1 (u64 big-endian)       8
--   master_key (32 zero bytes: none, as after the account's purge)      32
--   SHA-256 over the user's certified devices in ascending order of the raw device_id bytes, each
--     device_id (16) || identity_key (32) || signing_key (32) || certificate (64); of no bytes when
--     none is certified                                                  32
-- No email and no raw user id: a leaf names its user only to someone who already knows the id.
--
-- The append is done here, by deferred triggers on `master_keys` and `device_keys`, so that every
-- code path that changes what a leaf records (set, reset, certification, a key change that ends a
-- certificate, a session end of any kind, the purge) appends in its own transaction, at commit,
-- without each service having to remember it. An append is serialised by an advisory lock taken at
-- commit; the user's state is read after it, so leaves follow commit order. (This needs READ
-- COMMITTED, where each statement sees what committed before it; a REPEATABLE READ transaction that
-- changed keys would collide on the leaf index and fail rather than log a stale state.)

CREATE TABLE transparency_leaves (
    index       bigint PRIMARY KEY CHECK (index >= 0),
    leaf        bytea NOT NULL CHECK (length(leaf) = 104),
    created_at  timestamptz NOT NULL
);
-- A user's leaves, by the hashed id the leaf starts with.
CREATE INDEX transparency_leaves_by_user ON transparency_leaves (substring(leaf FROM 1 FOR 32), index);

-- Every perfect subtree's hash, written at append time: node (level, index) covers the leaves
-- [index * 2^level, (index + 1) * 2^level). Level 0 holds the leaf hashes SHA-256(0x00 || leaf).
-- Any proof or root is O(log n) of these.
CREATE TABLE transparency_nodes (
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    index  bigint NOT NULL CHECK (index >= 0),
    hash   bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, index)
);

-- Signed tree heads, at most one per size. `public_key` is the log key that signed it (an older
-- one stays valid after a rotation).
CREATE TABLE transparency_heads (
    tree_size     bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash     bytea NOT NULL CHECK (length(root_hash) = 32),
    timestamp_ms  bigint NOT NULL CHECK (timestamp_ms >= 0),
    signature     bytea NOT NULL CHECK (length(signature) = 64),
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),
    created_at    timestamptz NOT NULL
);

-- Append-only: no UPDATE, DELETE or TRUNCATE, for any role the triggers apply to (a superuser or
-- the owner can still disable them: `veil transparency verify` and the clients' consistency checks
-- catch what that allows).
CREATE FUNCTION transparency_refuse_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER transparency_leaves_append_only BEFORE UPDATE OR DELETE ON transparency_leaves
    FOR EACH ROW EXECUTE FUNCTION transparency_refuse_changes();
CREATE TRIGGER transparency_leaves_no_truncate BEFORE TRUNCATE ON transparency_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION transparency_refuse_changes();
CREATE TRIGGER transparency_nodes_append_only BEFORE UPDATE OR DELETE ON transparency_nodes
    FOR EACH ROW EXECUTE FUNCTION transparency_refuse_changes();
CREATE TRIGGER transparency_nodes_no_truncate BEFORE TRUNCATE ON transparency_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION transparency_refuse_changes();
CREATE TRIGGER transparency_heads_append_only BEFORE UPDATE OR DELETE ON transparency_heads
    FOR EACH ROW EXECUTE FUNCTION transparency_refuse_changes();
CREATE TRIGGER transparency_heads_no_truncate BEFORE TRUNCATE ON transparency_heads
    FOR EACH STATEMENT EXECUTE FUNCTION transparency_refuse_changes();

-- Append one leaf and the perfect subtrees it completes. The caller holds the append lock.
CREATE FUNCTION transparency_append(new_leaf bytea) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n      bigint;
    i      bigint;
    lvl    smallint := 0;
    h      bytea;
    left_  bytea;
BEGIN
    SELECT coalesce(max(index) + 1, 0) INTO n FROM transparency_leaves;
    INSERT INTO transparency_leaves (index, leaf, created_at) VALUES (n, new_leaf, now());
    h := sha256('\x00'::bytea || new_leaf);
    INSERT INTO transparency_nodes (level, index, hash) VALUES (0, n, h);
    i := n;
    WHILE i % 2 = 1 LOOP
        SELECT hash INTO STRICT left_ FROM transparency_nodes WHERE level = lvl AND index = i - 1;
        h := sha256('\x01'::bytea || left_ || h);
        lvl := lvl + 1;
        i := i / 2;
        INSERT INTO transparency_nodes (level, index, hash) VALUES (lvl, i, h);
    END LOOP;
    RETURN n;
END;
$$;

-- Record the user's current state if it differs from the user's latest leaf.
CREATE FUNCTION transparency_record(p_user uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    user_hash  bytea := sha256(convert_to('veil/transparency/user/v1', 'UTF8') || uuid_send(p_user));
    master     bytea;
    devices    bytea;
    last_leaf  bytea;
    version    bigint;
BEGIN
    -- One appender at a time, in commit order (the lock is held until this transaction ends).
    PERFORM pg_advisory_xact_lock(hashtextextended('veil:transparency-append', 0));
    SELECT master_key INTO master FROM master_keys WHERE user_id = p_user;
    SELECT sha256(coalesce(
               string_agg(uuid_send(device_id) || identity_key || signing_key || certificate, ''::bytea
                          ORDER BY uuid_send(device_id)),
               ''::bytea))
        INTO devices
        FROM device_keys WHERE user_id = p_user AND certificate IS NOT NULL;
    SELECT leaf INTO last_leaf FROM transparency_leaves
        WHERE substring(leaf FROM 1 FOR 32) = user_hash ORDER BY index DESC LIMIT 1;
    IF last_leaf IS NULL THEN
        IF master IS NULL THEN
            RETURN;  -- never had a master key: nothing to record (no certificate without one)
        END IF;
        version := 1;
    ELSE
        IF substring(last_leaf FROM 41) = coalesce(master, decode(repeat('00', 32), 'hex')) || devices THEN
            RETURN;  -- nothing a leaf records changed
        END IF;
        version := ('x' || encode(substring(last_leaf FROM 33 FOR 8), 'hex'))::bit(64)::bigint + 1;
    END IF;
    PERFORM transparency_append(
        user_hash || int8send(version) || coalesce(master, decode(repeat('00', 32), 'hex')) || devices
    );
END;
$$;

CREATE FUNCTION transparency_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM transparency_record(OLD.user_id);
    ELSE
        PERFORM transparency_record(NEW.user_id);
        IF TG_OP = 'UPDATE' AND OLD.user_id <> NEW.user_id THEN
            PERFORM transparency_record(OLD.user_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- Deferred to commit: the state recorded is the one the transaction commits, once per change.
CREATE CONSTRAINT TRIGGER master_keys_transparency AFTER INSERT OR UPDATE OR DELETE ON master_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION transparency_changed();
CREATE CONSTRAINT TRIGGER device_keys_transparency_insert AFTER INSERT ON device_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.certificate IS NOT NULL)
    EXECUTE FUNCTION transparency_changed();
CREATE CONSTRAINT TRIGGER device_keys_transparency_update AFTER UPDATE ON device_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.certificate IS DISTINCT FROM NEW.certificate
          OR (NEW.certificate IS NOT NULL AND (OLD.identity_key <> NEW.identity_key
                                               OR OLD.signing_key <> NEW.signing_key
                                               OR OLD.user_id <> NEW.user_id)))
    EXECUTE FUNCTION transparency_changed();
CREATE CONSTRAINT TRIGGER device_keys_transparency_delete AFTER DELETE ON device_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.certificate IS NOT NULL)
    EXECUTE FUNCTION transparency_changed();

-- Users who already have a master key when this migration runs get their first leaf now.
SELECT transparency_record(user_id) FROM master_keys ORDER BY changed_at, user_id;
