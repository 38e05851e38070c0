-- The materialised view of each ledger: every entry as JSON, kept in step with `changes`
-- in the same transactions, so reading a ledger never needs its Automerge document.
CREATE TABLE view_entries (
    group_id TEXT NOT NULL REFERENCES groups(id),
    tbl      TEXT NOT NULL,
    id       TEXT NOT NULL,
    raw      TEXT NOT NULL,
    PRIMARY KEY (group_id, tbl, id)
);

-- Which groups have a view that is complete (set when it is first built).
CREATE TABLE view_ready (
    group_id TEXT PRIMARY KEY REFERENCES groups(id)
);
