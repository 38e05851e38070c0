-- Removal rotates the group key: each epoch remembers which devices its creator left out
-- (hex device keys, JSON), so every node settles concurrent rotations the same way.
ALTER TABLE epochs ADD COLUMN excluded TEXT NOT NULL DEFAULT '[]';
