// Package ha tests a highly available control plane in containers
// (testcontainers-go): a 3-node Vault cluster on integrated storage with
// TLS, a 3-member etcd cluster and two kube-apiservers, each with its own
// vaultkms plugin container sharing a socket directory, under faults —
// the active Vault node stopped, a plugin cut off from Vault, a Transit
// rotation seen by both API servers, an etcd member killed, a plugin
// restarted, and the chart's controller (two replicas, leader election)
// with its leader stopped mid-sync. The tests are in *_test.go;
// docs/ha.md describes them and README.md lists the figures they print.
package ha
