"""etcd side of lclusterd: key layout, job transitions, node lease, prime election, scheduler, worker."""
