-- The devices an epoch's op was sealed to (hex device keys, JSON); NULL when not known (the
-- group's first epoch, epochs from a join token, older ops): taken as every device then. A
-- device in the group but not among them joined while the epoch was made, and an admin's
-- node makes a new epoch that includes it.
ALTER TABLE epochs ADD COLUMN given TEXT;
