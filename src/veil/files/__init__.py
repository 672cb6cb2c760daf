"""Files: encrypted attachments uploaded and downloaded through presigned object-store URLs."""
