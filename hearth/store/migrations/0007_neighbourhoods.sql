-- Neighbourhoods: the records said in each one this node's groups are in (the keys live
-- in the groups' own ledgers).
CREATE TABLE neighbourhood_records (
    id            BLOB PRIMARY KEY,      -- the id of the bundle that carried it
    neighbourhood TEXT NOT NULL,
    author        BLOB NOT NULL,         -- the writing device's public key
    seq           INTEGER NOT NULL,
    payload       BLOB NOT NULL,         -- the group-signed record
    envelope      BLOB NOT NULL,
    arrived       INTEGER NOT NULL,
    UNIQUE (neighbourhood, author, seq)
);
