"""The shards this agent holds, with the ordering rules of docs/protocol.md ("Assignments").

Pure bookkeeping: it starts, stops and sends nothing; runtime.py acts on what apply() returns.
"""

from dataclasses import dataclass, field, replace

from stubs import types_pb


@dataclass(frozen=True)
class Held:
    """One shard of one job, stamped (term, generation); `revoking` once a revoke arrived."""

    job: str
    shard: int
    term: int
    generation: int
    revoking: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.job, self.shard)

    @property
    def pair(self) -> tuple[int, int]:
        # Python compares tuples lexicographically, which is exactly the protocol's order.
        return (self.term, self.generation)

    def __str__(self) -> str:
        return f"{self.job}/{self.shard}@({self.term},{self.generation})"

    def to_proto(self) -> types_pb.Assignment:
        return types_pb.Assignment(
            shard=types_pb.ShardRef(job=self.job, shard=self.shard), term=self.term, generation=self.generation
        )

    @staticmethod
    def of(assignment: types_pb.Assignment) -> "Held":
        return Held(assignment.shard.job, assignment.shard.shard, assignment.term, assignment.generation)


@dataclass
class Changes:
    """What an AssignmentUpdate changed, for the agent to act on."""

    added: list[Held] = field(default_factory=list)
    # Left out of a snapshot: no longer ours. Abort their runs; send no Release.
    dropped: list[Held] = field(default_factory=list)
    # Now revoking: release each once nothing of it runs.
    revoked: list[Held] = field(default_factory=list)
    # Revokes of shards not held (already released, or never known): release at once.
    unknown_revokes: list[Held] = field(default_factory=list)
    # Adds and revokes older than the pair held.
    ignored: list[Held] = field(default_factory=list)


class AssignmentTable:
    def __init__(self) -> None:
        self._held: dict[tuple[str, int], Held] = {}
        self.highest_term = 0

    def accept_term(self, term: int) -> bool:
        """False for a message from a term below the highest seen: a deposed leader's."""
        if term < self.highest_term:
            return False
        self.highest_term = term
        return True

    def apply(self, update) -> Changes:
        """Applies an AssignmentUpdate: snapshot (or adds), then revokes."""
        changes = Changes()
        if update.snapshot:
            fresh = {}
            for assignment in update.add:
                held = Held.of(assignment)
                before = self._held.get(held.key)
                if before is None or before.pair != held.pair:
                    changes.added.append(held)
                fresh[held.key] = held
            changes.dropped = [before for key, before in self._held.items() if key not in fresh]
            self._held = fresh
        else:
            for assignment in update.add:
                held = Held.of(assignment)
                before = self._held.get(held.key)
                if before is not None and held.pair < before.pair:
                    changes.ignored.append(held)
                elif before is None or held.pair > before.pair:
                    self._held[held.key] = held
                    changes.added.append(held)
        for assignment in update.revoke:
            ref = Held.of(assignment)
            before = self._held.get(ref.key)
            if before is None:
                changes.unknown_revokes.append(ref)
            elif ref.pair < before.pair:
                changes.ignored.append(ref)
            else:
                # The Release must carry the revoke's pair, which may be newer than the one held.
                revoking = replace(ref, revoking=True)
                self._held[ref.key] = revoking
                changes.revoked.append(revoking)
        return changes

    def holds(self, ref: Held) -> bool:
        """True when exactly this (job, shard, term, generation) is held and not being revoked."""
        held = self._held.get(ref.key)
        return held is not None and not held.revoking and held.pair == ref.pair

    def get(self, job: str, shard: int) -> Held | None:
        return self._held.get((job, shard))

    def revoke_all(self) -> list[Held]:
        """The agent is leaving: every shard is being handed back."""
        self._held = {key: replace(held, revoking=True) for key, held in self._held.items()}
        return list(self._held.values())

    def remove(self, held: Held) -> None:
        self._held.pop(held.key, None)

    def clear(self) -> None:
        self._held.clear()

    def shards(self) -> list[Held]:
        return sorted(self._held.values(), key=lambda held: held.key)

    def __len__(self) -> int:
        return len(self._held)
