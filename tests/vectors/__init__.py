"""Known-answer vectors for the client protocol: each JSON file is a spec, its make_* module made it."""
