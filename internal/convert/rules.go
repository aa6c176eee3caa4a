package convert

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// The rules both peers' conversions share.

const (
	// ttlFactor: a kv Secret lives ttlFactor refresh intervals after its
	// last successful read, so two refreshes in a row may fail (Vault
	// restarting, a network blip) before it expires.
	ttlFactor = 3
	minTTL    = 10 * time.Second // the CRD's lower bound of spec.ttl
	maxTTL    = 8760 * time.Hour // and its upper bound
	minRefres = 5 * time.Second  // the CRD's lower bound of refreshInterval
	esoRefres = time.Hour        // ESO's default refreshInterval
	nsLabel   = "kubernetes.io/metadata.name"
)

// refreshAndTTL turns a peer's refresh interval into spec.refreshInterval
// and spec.ttl: ttl = max(3 × refresh, 10s), at most 8760h; a refresh
// under 5s is raised to 5s (the CRD's minimum). The note explains a
// change the user must know about.
func refreshAndTTL(refresh time.Duration) (ri, ttl *metav1.Duration, note string) {
	if refresh < minRefres {
		note = fmt.Sprintf("%s is below vaultkms' minimum refreshInterval; raised to %s", refresh, minRefres)
		refresh = minRefres
	}
	t := max(ttlFactor*refresh, minTTL)
	if t > maxTTL {
		t = maxTTL
		if refresh >= maxTTL {
			refresh = maxTTL / ttlFactor
			note = fmt.Sprintf("longer than vaultkms' longest ttl (%s); refreshInterval lowered to %s", maxTTL, refresh)
		}
	}
	return &metav1.Duration{Duration: refresh}, &metav1.Duration{Duration: t}, note
}

// parseDuration reads a Kubernetes-style duration ("1h", "30s", "1h30m").
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 30s or 1h", s)
	}
	return d, nil
}

// namespaceSelector allows exactly the named namespaces, by the label the
// API server sets on every namespace.
func namespaceSelector(nss []string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: nsLabel, Operator: metav1.LabelSelectorOpIn, Values: nss},
	}}
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// dnsName joins parts into a name valid for a cluster-scoped object.
func dnsName(parts ...string) string {
	var kept []string
	for _, p := range parts {
		p = strings.Trim(notDNS.ReplaceAllString(strings.ToLower(p), "-"), "-")
		if p != "" {
			kept = append(kept, p)
		}
	}
	n := strings.Join(kept, "-")
	if len(n) > 253 {
		n = strings.TrimRight(n[:253], "-")
	}
	return n
}

// cleanMount trims the slashes people write around a mount ("/secret/").
func cleanMount(m string) string { return strings.Trim(m, "/") }

// cleanPath makes a peer's path relative to its mount.
func cleanPath(p string) string { return strings.TrimLeft(p, "/") }

// vaultSecretSpec starts a VaultSecret's spec: authRef, target name and
// the adopt flag the user asked for.
func (c *converter) vaultSecretSpec(auth, target string) v1alpha1.VaultSecretSpec {
	return v1alpha1.VaultSecretSpec{
		AuthRef: &v1alpha1.AuthRef{Name: auth},
		Target:  v1alpha1.Target{Name: target, Adopt: c.opts.Adopt},
	}
}

// secretTypes are the Secret types a VaultSecret may write.
var secretTypes = map[string]bool{"Opaque": true, "kubernetes.io/tls": true, "kubernetes.io/dockerconfigjson": true,
	"kubernetes.io/basic-auth": true, "kubernetes.io/ssh-auth": true}

// secretType checks a peer's destination type against the CRD's enum.
func secretType(n *node, key string) string {
	t := n.str(key)
	if t != "" && !secretTypes[t] {
		n.warn(n.field(key), fmt.Sprintf("Secret type %q is not one vaultkms writes (Opaque, kubernetes.io/tls, kubernetes.io/dockerconfigjson, kubernetes.io/basic-auth, kubernetes.io/ssh-auth); Opaque is used", t))
		return ""
	}
	return t
}

// restartKinds are the workloads a VaultSecret restarts.
var restartKinds = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true}

// rolloutRestartTargets converts a list of {kind, name}.
func rolloutRestartTargets(n *node, key string) []v1alpha1.RolloutRestartTarget {
	var out []v1alpha1.RolloutRestartTarget
	for _, t := range n.list(key) {
		kind, name := t.str("kind"), t.str("name")
		if !restartKinds[kind] {
			t.warn(t.field("kind"), fmt.Sprintf("%s %q: vaultkms restarts only Deployments, StatefulSets and DaemonSets (no Argo Rollouts); restart it yourself when the Secret changes", kind, name))
			continue
		}
		out = append(out, v1alpha1.RolloutRestartTarget{Kind: kind, Name: name})
	}
	return out
}
