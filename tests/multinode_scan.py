"""Run in its own process by tests/test_multinode.py: a scan on a 3-node Ray cluster (head + two
worker nodes, ray.cluster_utils.Cluster) that loses a worker node mid-scan.

Prints one JSON line: the counts the test checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from audit.pipeline.raypool import RayExecutor
from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore


class RemovingExecutor(RayExecutor):
    """Removes the worker node hosting an actor once a few outcomes have arrived."""

    def __init__(self, cluster: Cluster, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cluster, self.removed = cluster, None

    def map(self, refs):
        for i, outcome in enumerate(super().map(refs)):
            yield outcome
            if i == 4 and self.removed is None:
                hosts = {ray.get(a.node_id.remote()) for a in self.actors[:2]}
                victim = next(n for n in self.cluster.worker_nodes if n.node_id in hosts)
                self.cluster.remove_node(victim, allow_graceful=False)
                self.removed = victim.node_id


def main(registry_root: str, store_root: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        registry = LocalRegistry(registry_root, hash_cache=None)
        store = ParquetStore(store_root)
        executor = RemovingExecutor(cluster, registry.name, store, workers=2)
        report = scan(registry, store, executor=executor)
        print("RESULT " + json.dumps({"n_listed": report.n_listed, "n_audited": report.n_audited,
                          "n_deferred": report.n_deferred, "statuses": report.statuses,
                          "removed": executor.removed, "worker_nodes_left": len(cluster.worker_nodes)}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(sys.argv[1], sys.argv[2])
