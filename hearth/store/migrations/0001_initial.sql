-- The node's store: everything needed to rebuild every ledger it holds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per group this node belongs to.
CREATE TABLE groups (
    id         TEXT PRIMARY KEY,        -- hex SHA-256 of the genesis op
    name       TEXT NOT NULL,
    actor      BLOB NOT NULL,           -- this device's Automerge actor id in this group
    seed       BLOB NOT NULL,           -- what the ledger's first change is derived from
    genesis    BLOB NOT NULL,           -- the signed genesis op
    created_at INTEGER NOT NULL
);

-- Every Automerge change not yet folded into a snapshot, in arrival order.
CREATE TABLE changes (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order; never reused (snapshots cover by seq)
    group_id TEXT NOT NULL REFERENCES groups(id),
    doc      TEXT NOT NULL,             -- 'live', or an archive period
    hash     BLOB NOT NULL,
    bytes    BLOB NOT NULL,
    local    INTEGER NOT NULL,          -- 1 if written on this device
    touched  TEXT NOT NULL,             -- JSON [[table, id], ...] the change touched
    UNIQUE (group_id, doc, hash)
);
CREATE INDEX changes_by_doc ON changes (group_id, doc, seq);

-- The latest saved document, covering every change up to and including `through`.
CREATE TABLE snapshots (
    group_id TEXT NOT NULL REFERENCES groups(id),
    doc      TEXT NOT NULL,
    bytes    BLOB NOT NULL,
    through  INTEGER NOT NULL,
    PRIMARY KEY (group_id, doc)
);
