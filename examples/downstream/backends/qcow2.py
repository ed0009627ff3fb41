"""ACME's qcow2 block backend (a stand-in: the tests only need it to import)."""

CLUSTER_SIZE = 64 * 1024


def clusters(size: int) -> int:
    return -(-size // CLUSTER_SIZE)
