"""What the API's callers and servers agree on besides the messages of lclusterd.proto.
Hand-written (`make proto` regenerates only lclusterd_pb2*.py)."""

# Trailing metadata of an error lclusterd itself answered, naming its class: a client can
# tell "etcd is unavailable behind the node" from "the node is unreachable" (both UNAVAILABLE).
ERROR_METADATA_KEY = "lclusterd-error"
# Request metadata of a call a node makes to another on a client's behalf (log proxying): a
# node answers such a call from its own files, so a request is forwarded at most once.
PROXIED_KEY = "lclusterd-proxied-by"
# Seconds a unary call to a node may take: above the node's etcd timeout, so etcd trouble
# arrives as the node's UNAVAILABLE answer rather than as a missed deadline.
CALL_TIMEOUT = 15.0
