"""Keys: the public-key directory and the device-to-device mailbox."""
