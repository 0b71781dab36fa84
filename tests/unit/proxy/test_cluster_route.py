import json

from bastion.proxy.cluster_route import ClusterHub, HubDeps, cluster_request


def _hub() -> ClusterHub:
    deps = HubDeps.__new__(HubDeps)  # only the cluster name is used below
    object.__setattr__(deps, "cluster", "root.test")
    return ClusterHub(deps)


def test_only_other_clusters_are_forwarded() -> None:
    hub = _hub()
    assert hub.wants(cluster_request("leaf.test", op="list").strip())
    assert not hub.wants(cluster_request("root.test", node="n", login="l").strip())
    assert not hub.wants(json.dumps({"node": "n", "login": "l"}).encode())
    assert not hub.wants(b"not json")
    assert not hub.is_leaf.__self__._anchors  # no remote clusters known yet


def test_the_clusters_listing_is_answered_by_the_root() -> None:
    hub = _hub()
    assert hub.wants(json.dumps({"op": "clusters"}).encode())
    assert hub.wants(cluster_request("root.test", op="clusters").strip())
