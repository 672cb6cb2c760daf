"""Backups: each user's one encrypted backup object, uploaded and downloaded through presigned
object-store URLs like attachments (docs/adr/0021). The server sees ciphertext size and digest only."""
