"""Key transparency: an append-only Merkle log of master-key and certified-device changes."""
