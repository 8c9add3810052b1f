"""The agent's own view of its lease (docs/protocol.md, "Heartbeats and the lease").

Pure arithmetic on the monotonic clock, in seconds; the caller passes every time in.
"""

import math

# The Hello counts as heartbeat 0 and the Welcome as its ack: the controller may dispatch right
# after the Welcome, so the first lease must already be running then.
HELLO_SEQ = 0


class Lease:
    """When the agent may act on its assignments until.

    The lease runs from the moment the agent *sent* the heartbeat that an ack answers, never from
    the moment the ack arrived: the controller renewed its own view when it received that
    heartbeat, which is later, so the agent's lease always ends first and the shard's next owner
    can never overlap with it.
    """

    def __init__(self) -> None:
        self._sent_at: dict[int, float] = {}
        self.expires_at = -math.inf

    def sent(self, seq: int, at: float) -> None:
        """Heartbeat `seq` (or the Hello, seq 0) left at monotonic time `at`."""
        self._sent_at[seq] = at

    def ack(self, seq: int, ttl_s: float) -> bool:
        """Applies the ack of `seq`; False, changing nothing, for a seq never sent on this stream."""
        sent_at = self._sent_at.get(seq)
        if sent_at is None:
            return False
        # Acks come in order on one stream: everything up to `seq` is answered.
        for key in [key for key in self._sent_at if key <= seq]:
            del self._sent_at[key]
        self.expires_at = max(self.expires_at, sent_at + ttl_s)
        return True

    def valid(self, now: float) -> bool:
        return now < self.expires_at

    @property
    def granted(self) -> bool:
        """True once any controller granted a lease (valid or not by now)."""
        return self.expires_at > -math.inf

    def forget_pending(self) -> None:
        """A new stream numbers heartbeats from 1 again. A lease earned earlier still stands."""
        self._sent_at.clear()
