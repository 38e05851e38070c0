-- Direct peers: the version vector each peer last reported per group, so `hearth status`
-- can say how many bundles are waiting to go to it.
CREATE TABLE peer_have (
    url      TEXT NOT NULL,
    group_id TEXT NOT NULL REFERENCES groups(id),
    author   BLOB NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (url, group_id, author)
);
