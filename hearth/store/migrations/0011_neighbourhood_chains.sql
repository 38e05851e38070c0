-- Neighbourhood feeds are checked chains (SECURITY.md R17 with R3, R4): each record keeps
-- the id of the one before it in its device's feed, and two records for one place in a
-- feed are both kept (as evidence, passed on like any other) rather than the second
-- refused, so that every node cuts that device off at the same place. Records kept before
-- have no prev (NULL): they were taken in order and are trusted in it.
CREATE TABLE neighbourhood_records_chained (
    id            BLOB PRIMARY KEY,      -- the id of the bundle that carried it
    neighbourhood TEXT NOT NULL,
    author        BLOB NOT NULL,         -- the writing device's public key
    seq           INTEGER NOT NULL,
    prev          BLOB,                  -- the id of its device's record before it
    payload       BLOB NOT NULL,         -- the group-signed record
    envelope      BLOB NOT NULL,
    arrived       INTEGER NOT NULL
);
INSERT INTO neighbourhood_records_chained(id, neighbourhood, author, seq, prev, payload,
    envelope, arrived)
    SELECT id, neighbourhood, author, seq, NULL, payload, envelope, arrived
    FROM neighbourhood_records;
DROP TABLE neighbourhood_records;
ALTER TABLE neighbourhood_records_chained RENAME TO neighbourhood_records;
CREATE INDEX neighbourhood_records_feed ON neighbourhood_records(neighbourhood, author, seq);
