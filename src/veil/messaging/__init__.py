"""Messaging: conversations, groups, messages, receipts and realtime delivery."""
