"""Operator: users' metadata, suspension, the incident log and the audit trail, for accounts with the
operator role (granted by `veil operator grant`)."""
