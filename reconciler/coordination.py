"""The other replicas, as the reconciler sees them (`replicas.replica_set.ReplicaSet` implements it;
see `reconciler.reconciler` for what several replicas change)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from reconciler.stream_watch import StreamWatch


class Coordination(Protocol):
    def attach(self, stream: StreamWatch, busy: Callable[[str], bool]) -> None: ...

    def leads(self, shop: str) -> bool:
        """This replica reconciles `shop` now (reads its reports, sweeps it, plans its load)."""
        ...

    def peer_connected(self) -> bool:
        """Another replica's TMC connection is up (the group's queue is being consumed)."""
        ...

    async def ready(self) -> None:
        """This replica's quota share and shops are known."""
        ...

    async def changed(self, within: float) -> None:
        """Wait until the set of led shops changes, or `within` seconds."""
        ...

    async def fence(self, conn: Any, shop: str) -> None:
        """Inside the ledger write about to advance `shop`: raise NotLeader unless still leading it."""
        ...


class Alone:
    """One replica: it leads every shop."""

    def attach(self, stream: StreamWatch, busy: Callable[[str], bool]) -> None:
        return None

    def leads(self, shop: str) -> bool:
        return True

    def peer_connected(self) -> bool:
        return False

    async def ready(self) -> None:
        return None

    async def changed(self, within: float) -> None:
        return None

    async def fence(self, conn: Any, shop: str) -> None:
        return None
