"""Realtime: WebSocket delivery of messages, device messages and events, at least once."""
