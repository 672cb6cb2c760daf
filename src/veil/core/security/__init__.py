"""Security primitives shared by every service: passwords, access tokens, sessions, rate limits.
All cryptography comes from `cryptography`, `argon2-cffi` and `joserfc`; nothing is hand-rolled."""
