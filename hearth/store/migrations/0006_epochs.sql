-- Removal rotates the group key: each epoch remembers which devices its creator left out
-- (hex device keys, JSON), so every node settles concurrent rotations the same way.
ALTER TABLE epochs ADD COLUMN excluded TEXT NOT NULL DEFAULT '[]';
-- 0: the key came from an op that does not count (its author was removed by then, or is
-- no admin). It still opens what was sealed under it, but nothing new is sealed with it.
ALTER TABLE epochs ADD COLUMN eligible INTEGER NOT NULL DEFAULT 1;

-- Changes that will never be part of the ledger: those of a removed device after its
-- cutoff, and every change built on one (SECURITY.md R8). A bundle whose changes build on
-- an unknown change waits for it; one that builds on an orphaned change is not held up.
CREATE TABLE orphaned_changes (
    group_id TEXT NOT NULL REFERENCES groups(id),
    hash     BLOB NOT NULL,
    PRIMARY KEY (group_id, hash)
);

-- Proof that a device signed two different bundles at one place in its feed (R4): it is
-- treated as removed from the seq before, and the proof is passed on so every node that
-- holds both bundles judges alike.
CREATE TABLE equivocations (
    group_id TEXT NOT NULL REFERENCES groups(id),
    author   BLOB NOT NULL,
    seq      INTEGER NOT NULL,
    id       BLOB NOT NULL,
    topic    BLOB NOT NULL,
    envelope BLOB NOT NULL,
    PRIMARY KEY (group_id, id)
);
