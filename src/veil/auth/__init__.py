"""Auth: identity, sessions and tokens."""
