"""The E2EE scheme of docs/e2ee.md, as pure functions and state objects: no I/O of any kind."""
