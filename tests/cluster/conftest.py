"""Fixtures of the virtual cluster (``virtual_cluster.py``): built once per session, removed
at its end whatever happened, and any job a test leaves running killed after the test."""

import subprocess

import pytest
from netns import remove_namespaces
from virtual_cluster import NODES, PREFIX, Cluster, build, why_no_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    remove_namespaces(PREFIX)
    try:
        try:
            build()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot build network namespaces here: {exc.stderr.strip()}")
        yield Cluster(tmp_path_factory.mktemp("cluster"))
    finally:
        remove_namespaces(PREFIX)


@pytest.fixture
def hosts(cluster):
    """The cluster, with anything a test leaves running killed afterwards."""
    yield cluster
    cluster.end_all()
    for node in NODES:
        cluster.link(node, "up")
