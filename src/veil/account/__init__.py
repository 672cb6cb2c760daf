"""Account: the caller's profile and data-subject rights (export, erasure, email change)."""
