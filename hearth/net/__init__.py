"""The node's carriers: syncing with relays and peers, the peer listener, the LAN, invite codes,
changes carried on a file, and the daemon that runs them."""
