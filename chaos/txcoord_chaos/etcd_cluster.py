"""A 3-member etcd cluster of the harness' own, each member a process the nemesis can
kill, restart and pause like any other: the log of decisions must survive one member's loss
(a quorum of two keeps accepting writes), which a single dev member cannot show."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coordinator.rpc.net import free_port
from coordinator.server import etcd_binary

MEMBERS = ("etcd1", "etcd2", "etcd3")


@dataclass
class EtcdCluster:
    data_dir: Path
    client_ports: dict[str, int] = field(default_factory=dict)
    peer_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Ports given (a chaos run's, from its slot) stay; the rest are picked free.
        for name in MEMBERS:
            self.client_ports.setdefault(name, free_port())
            self.peer_ports.setdefault(name, free_port())

    def argv(self, name: str) -> list[str]:
        """The member's command line; the same one restarts it, on its surviving data."""
        client = f"http://127.0.0.1:{self.client_ports[name]}"
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        everyone = ",".join(f"{m}=http://127.0.0.1:{self.peer_ports[m]}" for m in MEMBERS)
        return [
            etcd_binary(), "--name", name, "--data-dir", str(self.data_dir / name),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", everyone, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"txc-chaos-{self.data_dir.name}",
            # Auto-compaction keeps CAS fast (see server/_dev_etcd.py); short heartbeats make a lost

            # leader noticed within a second, as a production cluster on a LAN would.
            "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000",
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--logger", "zap", "--log-level", "error",
        ]
