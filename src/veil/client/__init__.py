"""The reference client's cryptographic core: keys, sessions and envelopes, with no network code."""
