"""The reference client, in three layers that import one way only: `cli` -> `sdk` -> `protocol`.

- `protocol`: the end-to-end encryption scheme (keys, sessions, sender keys, envelopes, file
  encryption, trust). Pure computation: no network, no files, no clock reads it is not given.
- `sdk`: `VeilClient`, the HTTP client of the public API, and the encrypted key store file.
- `cli`: `veil-client`, its commands, chat screen, prompts and the profile directory.
"""
