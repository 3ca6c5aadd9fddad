"""Helpers of the integration tests, one module per purpose (tests/integration is on sys.path,
so a test imports them as `support.<module>`):

    host          the rootfs, the cgroup version, the cgroups a node leaves behind
    processes     real processes: EtcdProcess, EtcdCluster, NodeProcess (one lclusterd),
                  Cluster (nodes on one etcd and key prefix), run_lclient
    etcd_readers  etcd read with etcdctl: etcdctl, etcd_prefix, etcd_records, prime_holder
    jobs          jobs through lclient: add, check, until, nodes, ran_on, pid_alive,
                  assert_stream_ended_once
    images        image tests: layer tars member by member, an umoci image and its skopeo
                  docker-archive twin, tree snapshots, `lclusterd image` as a subprocess
    fixtures      the pytest fixtures (etcd, module_etcd, etcd_cluster, cluster, cluster3),
                  registered once by tests/integration/conftest.py: tests do not import them
"""
