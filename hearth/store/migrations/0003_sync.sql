-- Sync: the group's epoch secrets, every bundle this node holds, and what each relay has.
CREATE TABLE epochs (
    group_id TEXT NOT NULL REFERENCES groups(id),
    epoch_id BLOB NOT NULL,
    number   INTEGER NOT NULL,
    secret   BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch_id)
);

CREATE TABLE bundles (
    id       BLOB PRIMARY KEY,          -- SHA-256 of the envelope without its relay signature
    group_id TEXT NOT NULL REFERENCES groups(id),
    topic    BLOB NOT NULL,
    author   BLOB NOT NULL,             -- the writing device's public key
    seq      INTEGER NOT NULL,
    prev     BLOB NOT NULL,
    envelope BLOB NOT NULL,
    state    TEXT NOT NULL,             -- 'applied', or 'waiting' for an earlier one
    arrived  INTEGER NOT NULL,
    UNIQUE (group_id, author, seq)
);
CREATE INDEX bundles_by_state ON bundles (group_id, state, author, seq);

CREATE TABLE relay_cursors (
    url    TEXT NOT NULL,
    topic  BLOB NOT NULL,
    cursor INTEGER NOT NULL,
    PRIMARY KEY (url, topic)
);

CREATE TABLE relay_has (
    url       TEXT NOT NULL,
    bundle_id BLOB NOT NULL,
    PRIMARY KEY (url, bundle_id)
);

CREATE TABLE sync_log (
    url          TEXT PRIMARY KEY,
    last_ok      INTEGER,
    last_attempt INTEGER,
    last_error   TEXT
);

CREATE TABLE peers (
    url      TEXT PRIMARY KEY,
    added_at INTEGER NOT NULL
);

CREATE TABLE rejections (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL
);
