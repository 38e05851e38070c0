-- Snapshots: feed heads a received snapshot brought (the bundles before them are inside
-- it), snapshots already taken in, and the snapshots this node published to each relay.
CREATE TABLE covered (
    group_id TEXT NOT NULL REFERENCES groups(id),
    author   BLOB NOT NULL,
    seq      INTEGER NOT NULL,
    id       BLOB NOT NULL,
    PRIMARY KEY (group_id, author)
);

CREATE TABLE seen_snapshots (
    id BLOB PRIMARY KEY
);

CREATE TABLE published_snapshots (
    url     TEXT NOT NULL,
    topic   BLOB NOT NULL,
    covers  INTEGER NOT NULL,
    applied INTEGER NOT NULL,          -- how many bundles this node had applied then
    PRIMARY KEY (url, topic)
);
