package harness

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// kubernetesServiceIP is the ClusterIP of the "kubernetes" Service: the
// first address of envtest's service range 10.0.0.0/24. Pods reach the API
// server there (KUBERNETES_SERVICE_HOST), through the node's DNAT rule.
const kubernetesServiceIP = "10.0.0.1"

// nodeAPIServerArgs are the kube-apiserver flags a control plane with a
// node needs:
//   - it listens on every address, so pods on the node's bridge reach it
//     at the bridge's gateway (the node's DNAT rule sends the kubernetes
//     Service's ClusterIP there; there is no kube-proxy);
//   - it reaches kubelets at their InternalIP (the bridge's gateway), not
//     their hostname, and authenticates to them with a client certificate
//     (as kubeadm's apiserver-kubelet-client), so `kubectl logs/exec`
//     work against a kubelet that allows no anonymous request.
//
// envtest also disables the ServiceAccount admission plugin; a node needs
// it (it mounts the service account token pods use for in-cluster
// configuration), so StartControlPlane drops that flag.
func nodeAPIServerArgs(certDir string) map[string]string {
	return map[string]string{
		"bind-address":                    "0.0.0.0",
		"kubelet-preferred-address-types": "InternalIP",
		"kubelet-client-certificate":      filepath.Join(certDir, kubeletClientName+".crt"),
		"kubelet-client-key":              filepath.Join(certDir, kubeletClientName+".key"),
	}
}

// kubeletClientName is the API server's user name at the kubelets, bound
// to system:kubelet-api-admin by StartNode as kubeadm binds it.
const kubeletClientName = "kube-apiserver-kubelet-client"

// writeNodeServingCerts writes, into the API server's certificate
// directory, a serving certificate that also covers the kubernetes
// Service's ClusterIP (in-cluster clients dial it and check it), and a
// service account signing key, which envtest writes only when it writes
// the serving certificate itself. It returns the serving CA in PEM, for
// envtest's clients, and the CA file, for kube-controller-manager's
// --root-ca-file (the kube-root-ca.crt ConfigMap pods trust). It also
// writes the API server's kubelet client certificate and its CA
// (kubelet-client-ca.crt), which kubelets trust.
func writeNodeServingCerts(certDir string) (caPEM []byte, caFile string, err error) {
	ca, err := NewCA(certDir, "apiserver-serving")
	if err != nil {
		return nil, "", fmt.Errorf("serving CA: %w", err)
	}
	crt, key, err := ca.IssueServer(certDir, "apiserver-node", net.ParseIP(kubernetesServiceIP))
	if err != nil {
		return nil, "", fmt.Errorf("serving certificate: %w", err)
	}
	for from, to := range map[string]string{crt: "apiserver.crt", key: "apiserver.key"} {
		if err := os.Rename(from, filepath.Join(certDir, to)); err != nil {
			return nil, "", err
		}
	}
	sa, err := NewCA(certDir, "sa")
	if err != nil {
		return nil, "", fmt.Errorf("service account signing key: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(sa.key)
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(certDir, "sa-signer.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(certDir, "sa-signer.crt"), sa.CertPEM, 0o600); err != nil {
		return nil, "", err
	}
	kc, err := NewCA(certDir, "kubelet-client")
	if err != nil {
		return nil, "", fmt.Errorf("kubelet client CA: %w", err)
	}
	if _, _, err := kc.Issue(certDir, kubeletClientName, false); err != nil {
		return nil, "", fmt.Errorf("kubelet client certificate: %w", err)
	}
	return ca.CertPEM, ca.CertFile, nil
}
