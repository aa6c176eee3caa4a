package scan

import (
	"context"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// builtin maps each built-in resource to the etcd path kube-apiserver's
// storage factory stores it under, relative to --etcd-prefix. Built-in
// resources are stored by resource name alone, whatever their group; a few
// keep historic names (SpecialDefaultResourcePrefixes in kube-apiserver).
// e2e/paths_test.go creates one object of each and finds it at this path on
// a real API server: add a resource here only together with it there.
var builtin = map[string]string{
	"configmaps":             "configmaps",
	"endpoints":              "services/endpoints",
	"events":                 "events",
	"limitranges":            "limitranges",
	"namespaces":             "namespaces",
	"nodes":                  "minions",
	"persistentvolumeclaims": "persistentvolumeclaims",
	"persistentvolumes":      "persistentvolumes",
	"pods":                   "pods",
	"podtemplates":           "podtemplates",
	"replicationcontrollers": "controllers",
	"resourcequotas":         "resourcequotas",
	"secrets":                "secrets",
	"serviceaccounts":        "serviceaccounts",
	"services":               "services/specs",

	"controllerrevisions.apps": "controllerrevisions",
	"daemonsets.apps":          "daemonsets",
	"deployments.apps":         "deployments",
	"replicasets.apps":         "replicasets",
	"statefulsets.apps":        "statefulsets",

	"cronjobs.batch":                                               "cronjobs",
	"jobs.batch":                                                   "jobs",
	"horizontalpodautoscalers.autoscaling":                         "horizontalpodautoscalers",
	"leases.coordination.k8s.io":                                   "leases",
	"endpointslices.discovery.k8s.io":                              "endpointslices",
	"events.events.k8s.io":                                         "events",
	"ingresses.networking.k8s.io":                                  "ingress",
	"ingressclasses.networking.k8s.io":                             "ingressclasses",
	"networkpolicies.networking.k8s.io":                            "networkpolicies",
	"poddisruptionbudgets.policy":                                  "poddisruptionbudgets",
	"clusterrolebindings.rbac.authorization.k8s.io":                "clusterrolebindings",
	"clusterroles.rbac.authorization.k8s.io":                       "clusterroles",
	"rolebindings.rbac.authorization.k8s.io":                       "rolebindings",
	"roles.rbac.authorization.k8s.io":                              "roles",
	"priorityclasses.scheduling.k8s.io":                            "priorityclasses",
	"csidrivers.storage.k8s.io":                                    "csidrivers",
	"storageclasses.storage.k8s.io":                                "storageclasses",
	"mutatingwebhookconfigurations.admissionregistration.k8s.io":   "mutatingwebhookconfigurations",
	"validatingwebhookconfigurations.admissionregistration.k8s.io": "validatingwebhookconfigurations",

	// The rest of what kube-apiserver 1.37 stores, GA, beta and alpha
	// alike (an alpha resource is encrypted as soon as a cluster turns it
	// on): e2e's TestStoragePaths starts the API server with every group
	// version and feature gate on and fails on any resource its discovery
	// serves that is missing here.
	"certificatesigningrequests.certificates.k8s.io":                 "certificatesigningrequests",
	"clustertrustbundles.certificates.k8s.io":                        "clustertrustbundles",
	"podcertificaterequests.certificates.k8s.io":                     "podcertificaterequests",
	"leasecandidates.coordination.k8s.io":                            "leasecandidates",
	"evictionrequests.lifecycle.k8s.io":                              "evictionrequests",
	"evictions.lifecycle.k8s.io":                                     "evictions",
	"ipaddresses.networking.k8s.io":                                  "ipaddresses",
	"servicecidrs.networking.k8s.io":                                 "servicecidrs",
	"flowschemas.flowcontrol.apiserver.k8s.io":                       "flowschemas",
	"prioritylevelconfigurations.flowcontrol.apiserver.k8s.io":       "prioritylevelconfigurations",
	"storageversionmigrations.storagemigration.k8s.io":               "storageversionmigrations",
	"storageversions.internal.apiserver.k8s.io":                      "storageversions",
	"csinodes.storage.k8s.io":                                        "csinodes",
	"csistoragecapacities.storage.k8s.io":                            "csistoragecapacities",
	"volumeattachments.storage.k8s.io":                               "volumeattachments",
	"volumeattributesclasses.storage.k8s.io":                         "volumeattributesclasses",
	"validatingadmissionpolicies.admissionregistration.k8s.io":       "validatingadmissionpolicies",
	"validatingadmissionpolicybindings.admissionregistration.k8s.io": "validatingadmissionpolicybindings",
	"mutatingadmissionpolicies.admissionregistration.k8s.io":         "mutatingadmissionpolicies",
	"mutatingadmissionpolicybindings.admissionregistration.k8s.io":   "mutatingadmissionpolicybindings",
	"runtimeclasses.node.k8s.io":                                     "runtimeclasses",
	"workloads.scheduling.k8s.io":                                    "workloads",
	"podgroups.scheduling.k8s.io":                                    "podgroups",
	"compositepodgroups.scheduling.k8s.io":                           "compositepodgroups",
	"deviceclasses.resource.k8s.io":                                  "deviceclasses",
	"devicetaintrules.resource.k8s.io":                               "devicetaintrules",
	"resourceclaims.resource.k8s.io":                                 "resourceclaims",
	"resourceclaimtemplates.resource.k8s.io":                         "resourceclaimtemplates",
	"resourceslices.resource.k8s.io":                                 "resourceslices",
	"resourcepoolstatusrequests.resource.k8s.io":                     "resourcepoolstatusrequests",
	// The aggregator and the CRD server store their own objects under
	// <group>/<resource>, as custom resources are.
	"apiservices.apiregistration.k8s.io":             "apiregistration.k8s.io/apiservices",
	"customresourcedefinitions.apiextensions.k8s.io": "apiextensions.k8s.io/customresourcedefinitions",
}

// BuiltinResources lists the built-in resources with a known etcd path.
func BuiltinResources() []string {
	out := make([]string, 0, len(builtin))
	for r := range builtin {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// canonical turns "deployments" into "deployments.apps" when the plural
// names exactly one built-in resource, as kubectl does.
func canonical(name string) string {
	if _, ok := builtin[name]; ok || strings.Contains(name, ".") {
		return name
	}
	var found []string
	for r := range builtin {
		if p, _, _ := strings.Cut(r, "."); p == name {
			found = append(found, r)
		}
	}
	if len(found) == 1 {
		return found[0]
	}
	return name
}

// Target is a resolved resource: its name and where etcd holds it.
type Target struct {
	Resource string
	// KeyPrefix ends in "/": <prefix>/secrets/.
	KeyPrefix string
	// CRD is, for a custom resource, the etcd key of its
	// CustomResourceDefinition, which must exist for a scan to mean
	// anything; empty for a built-in resource.
	CRD string
}

// KeyPrefix is where kube-apiserver stores r under prefix, for a name
// already resolved (built-in, or a custom resource <plural>.<group> stored
// at <prefix>/<group>/<plural>/).
func (r Resource) KeyPrefix(prefix string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	name := canonical(string(r))
	if p, ok := builtin[name]; ok {
		return prefix + "/" + p + "/"
	}
	plural, group, _ := strings.Cut(name, ".")
	return prefix + "/" + group + "/" + plural + "/"
}

// Targets maps resource names to etcd paths without reading etcd: a name
// that is neither built-in nor shaped <plural>.<group> is refused here, and
// a custom resource's CustomResourceDefinition is looked up by every scan
// (Run), so that a process started while etcd is unreachable (the auditor)
// can still start and report the failed scans.
func Targets(prefix string, names []Resource) ([]Target, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	var out []Target
	seen := map[string]bool{}
	for _, r := range names {
		name := canonical(string(r))
		if seen[name] {
			continue
		}
		seen[name] = true
		t := Target{Resource: name, KeyPrefix: Resource(name).KeyPrefix(prefix)}
		if _, ok := builtin[name]; !ok {
			plural, group, grouped := strings.Cut(name, ".")
			if !grouped || plural == "" || group == "" {
				return nil, fmt.Errorf("--resources: %q is not a built-in resource this tool knows the etcd path of; built-in: %s; custom resources are named <plural>.<group>", r, strings.Join(BuiltinResources(), ", "))
			}
			t.CRD = prefix + "/apiextensions.k8s.io/customresourcedefinitions/" + name
		}
		out = append(out, t)
	}
	return out, nil
}

// CheckCRDs refuses custom resources whose CustomResourceDefinition is not
// stored in this etcd: a typo or a wrong group must not scan an empty range
// and report success.
func CheckCRDs(ctx context.Context, kv KV, targets []Target) error {
	for _, t := range targets {
		if t.CRD == "" {
			continue
		}
		resp, err := kv.Get(ctx, t.CRD, clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("look up CustomResourceDefinition %s in etcd: %w", t.Resource, err)
		}
		if resp.Count == 0 {
			return fmt.Errorf("--resources: %q is neither a built-in resource nor a CustomResourceDefinition stored in this etcd (no key %s): check the name and --etcd-prefix", t.Resource, t.CRD)
		}
	}
	return nil
}

// Resolve is Targets then CheckCRDs, for a one-shot command that needs
// etcd anyway.
func Resolve(ctx context.Context, kv KV, prefix string, names []Resource) ([]Target, error) {
	targets, err := Targets(prefix, names)
	if err != nil {
		return nil, err
	}
	if err := CheckCRDs(ctx, kv, targets); err != nil {
		return nil, err
	}
	return targets, nil
}

// reverse maps an etcd path (relative to the prefix) back to its resource;
// events.events.k8s.io shares "events" with the core resource and is left
// out so that path reads as "events".
var reverse = func() map[string]string {
	m := map[string]string{}
	for r, p := range builtin {
		if r == "events.events.k8s.io" {
			continue
		}
		m[p] = r
	}
	return m
}()

// ResourceOf names the resource an etcd key under prefix belongs to, for
// whole-prefix scans: a built-in resource, a custom resource
// <plural>.<group>, or the raw path segment when neither is known.
func ResourceOf(prefix, key string) string {
	rest, ok := strings.CutPrefix(key, strings.TrimSuffix(prefix, "/")+"/")
	if !ok {
		return ""
	}
	first, after, _ := strings.Cut(rest, "/")
	if r, ok := reverse[first]; ok {
		return r
	}
	second, _, _ := strings.Cut(after, "/")
	if r, ok := reverse[first+"/"+second]; ok {
		return r
	}
	if strings.Contains(first, ".") && second != "" {
		return second + "." + first
	}
	return first
}

// WrongPrefixError is CheckPrefix's answer when etcd answered but holds no
// namespaces/default under the prefix (as opposed to etcd not answering).
type WrongPrefixError struct{ Key, Prefix string }

func (e *WrongPrefixError) Error() string {
	return fmt.Sprintf("etcd has no %s: --etcd-prefix %q is not kube-apiserver's, or this is not the cluster's etcd", e.Key, e.Prefix)
}

// CheckPrefix makes sure prefix is what kube-apiserver writes under: every
// cluster has the namespace "default". A wrong --etcd-prefix or the wrong
// etcd would otherwise scan nothing and look clean.
func CheckPrefix(ctx context.Context, kv KV, prefix string) error {
	key := strings.TrimSuffix(prefix, "/") + "/namespaces/default"
	resp, err := kv.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("check --etcd-prefix: read %s: %w", key, err)
	}
	if resp.Count == 0 {
		return &WrongPrefixError{Key: key, Prefix: prefix}
	}
	return nil
}
