"""Blocks: a user stops another from reaching them.

Blocking is one-way and restrains only the blocked user: they can no longer invite the blocker to a
group or start a direct conversation with them (both answer exactly as for a user who does not
exist), and device messages they send to the blocker's devices are accepted and dropped. The
blocker keeps every ability of their own. A block removes nobody from a conversation the two
already share: the blocker leaves it, and the blocked user can neither bring them back (only the
one who left rejoins a direct conversation) nor start a new one. Other services ask `is_blocked`
inside their own transaction; it is the one published query on the `blocks` table.
"""

from veil.blocks.store import is_blocked

__all__ = ["is_blocked"]
