"""Helpers of the integration tests, one module per purpose (tests/integration is on sys.path,
so a test imports them as `support.<module>`):

    host          the rootfs, the cgroup version, the cgroups a node leaves behind
    processes     real processes: EtcdProcess, EtcdCluster (either plain http or TLS with an
                  etcd_pki.Pki), NodeProcess (one lclusterd), Cluster (nodes on one etcd and key
                  prefix), run_lclient
    etcd_pki      etcd's TLS in the tests: a PKI made with lclusterd/certs.py (member and client
                  certificates), a client's files for etcdctl and lclusterd
    embedded      a node's embedded etcd from outside (pid, endpoints, client files), for the readers
    etcd_readers  etcd read with etcdctl (with the etcd's client certificate when it runs TLS):
                  etcdctl, etcd_prefix, etcd_records, prime_holder
    jobs          jobs through lclient: add, check, until, nodes, ran_on, pid_alive,
                  assert_stream_ended_once
    images        image tests: layer tars member by member, an umoci image and its skopeo
                  docker-archive twin, tree snapshots, `lclusterd image` as a subprocess
    fixtures      the pytest fixtures (etcd, module_etcd, etcd_cluster, etcd_pki, etcd_cluster_tls,
                  cluster, cluster3, cluster3_tls),
                  registered once by tests/integration/conftest.py: tests do not import them
"""
