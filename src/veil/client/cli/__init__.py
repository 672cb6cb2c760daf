"""`veil-client`: commands, the chat screen, prompts and the profile directory on disk."""
