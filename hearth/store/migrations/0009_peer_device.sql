-- The device key a direct peer proved on the last connection that got that far (see
-- hearth/protocol/handshake.py), so `hearth status` can say whose device it is.
ALTER TABLE peers ADD COLUMN device BLOB;
