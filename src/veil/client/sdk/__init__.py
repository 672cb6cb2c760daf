"""The client library: `VeilClient` (HTTPS to the public API) and the encrypted key store file."""
