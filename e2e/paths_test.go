package e2e

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vaultkms/e2e/harness"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// builtinObjects has one minimal object per built-in resource the scanner
// maps, as YAML; namespaced ones go to "default".
var builtinObjects = map[string]string{
	"configmaps":             `{apiVersion: v1, kind: ConfigMap}`,
	"endpoints":              `{apiVersion: v1, kind: Endpoints}`,
	"events":                 `{apiVersion: v1, kind: Event, involvedObject: {kind: Pod, name: x, namespace: default}}`,
	"limitranges":            `{apiVersion: v1, kind: LimitRange, spec: {limits: [{type: Container}]}}`,
	"namespaces":             `{apiVersion: v1, kind: Namespace}`,
	"nodes":                  `{apiVersion: v1, kind: Node}`,
	"persistentvolumeclaims": `{apiVersion: v1, kind: PersistentVolumeClaim, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}`,
	"persistentvolumes":      `{apiVersion: v1, kind: PersistentVolume, spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /tmp/x}}}`,
	"pods":                   `{apiVersion: v1, kind: Pod, spec: {containers: [{name: c, image: busybox}]}}`,
	"podtemplates":           `{apiVersion: v1, kind: PodTemplate, template: {spec: {containers: [{name: c, image: busybox}]}}}`,
	"replicationcontrollers": `{apiVersion: v1, kind: ReplicationController, spec: {replicas: 0, selector: {a: b}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}}`,
	"resourcequotas":         `{apiVersion: v1, kind: ResourceQuota}`,
	"secrets":                `{apiVersion: v1, kind: Secret}`,
	"serviceaccounts":        `{apiVersion: v1, kind: ServiceAccount}`,
	"services":               `{apiVersion: v1, kind: Service, spec: {ports: [{port: 80}]}}`,

	"controllerrevisions.apps": `{apiVersion: apps/v1, kind: ControllerRevision, revision: 1, data: {}}`,
	"daemonsets.apps":          `{apiVersion: apps/v1, kind: DaemonSet, spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}}`,
	"deployments.apps":         `{apiVersion: apps/v1, kind: Deployment, spec: {replicas: 0, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}}`,
	"replicasets.apps":         `{apiVersion: apps/v1, kind: ReplicaSet, spec: {replicas: 0, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}}`,
	"statefulsets.apps":        `{apiVersion: apps/v1, kind: StatefulSet, spec: {replicas: 0, serviceName: s, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}}`,

	"cronjobs.batch":                                               `{apiVersion: batch/v1, kind: CronJob, spec: {schedule: "0 0 * * *", jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}}`,
	"jobs.batch":                                                   `{apiVersion: batch/v1, kind: Job, spec: {suspend: true, template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}`,
	"horizontalpodautoscalers.autoscaling":                         `{apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, spec: {maxReplicas: 2, scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}}}`,
	"leases.coordination.k8s.io":                                   `{apiVersion: coordination.k8s.io/v1, kind: Lease}`,
	"endpointslices.discovery.k8s.io":                              `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, addressType: IPv4, endpoints: []}`,
	"events.events.k8s.io":                                         `{apiVersion: events.k8s.io/v1, kind: Event, metadata: {name: paths-test-ev}, eventTime: "2026-01-01T00:00:00.000000Z", reportingController: x.io/y, reportingInstance: i, action: A, reason: R, type: Normal, regarding: {kind: Pod, name: x, namespace: default}}`,
	"ingresses.networking.k8s.io":                                  `{apiVersion: networking.k8s.io/v1, kind: Ingress, spec: {defaultBackend: {service: {name: s, port: {number: 80}}}}}`,
	"ingressclasses.networking.k8s.io":                             `{apiVersion: networking.k8s.io/v1, kind: IngressClass, spec: {controller: x.io/y}}`,
	"networkpolicies.networking.k8s.io":                            `{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, spec: {podSelector: {}}}`,
	"poddisruptionbudgets.policy":                                  `{apiVersion: policy/v1, kind: PodDisruptionBudget, spec: {minAvailable: 1}}`,
	"clusterrolebindings.rbac.authorization.k8s.io":                `{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}`,
	"clusterroles.rbac.authorization.k8s.io":                       `{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole}`,
	"rolebindings.rbac.authorization.k8s.io":                       `{apiVersion: rbac.authorization.k8s.io/v1, kind: RoleBinding, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}`,
	"roles.rbac.authorization.k8s.io":                              `{apiVersion: rbac.authorization.k8s.io/v1, kind: Role}`,
	"priorityclasses.scheduling.k8s.io":                            `{apiVersion: scheduling.k8s.io/v1, kind: PriorityClass, value: 10}`,
	"csidrivers.storage.k8s.io":                                    `{apiVersion: storage.k8s.io/v1, kind: CSIDriver, spec: {}}`,
	"storageclasses.storage.k8s.io":                                `{apiVersion: storage.k8s.io/v1, kind: StorageClass, provisioner: x.io/y}`,
	"mutatingwebhookconfigurations.admissionregistration.k8s.io":   `{apiVersion: admissionregistration.k8s.io/v1, kind: MutatingWebhookConfiguration}`,
	"validatingwebhookconfigurations.admissionregistration.k8s.io": `{apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingWebhookConfiguration}`,
	"apiservices.apiregistration.k8s.io":                           `{apiVersion: apiregistration.k8s.io/v1, kind: APIService, metadata: {name: v1.paths.example.com}, spec: {group: paths.example.com, version: v1, groupPriorityMinimum: 1, versionPriority: 1, service: {namespace: default, name: s}}}`,
	"customresourcedefinitions.apiextensions.k8s.io":               `{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: widgets.paths.example.com}, spec: {group: paths.example.com, names: {plural: widgets, kind: Widget}, scope: Namespaced, versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]}}`,
}

// TestStoragePaths creates one object of every built-in resource the
// scanner maps and finds each in etcd at the path the scanner reads, on a
// real kube-apiserver; and checks that names it cannot map are refused.
func TestStoragePaths(t *testing.T) {
	t.Parallel()
	if got, want := len(builtinObjects), len(scan.BuiltinResources()); got != want {
		t.Fatalf("%d test objects for %d mapped resources: every mapped resource needs one", got, want)
	}
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{})
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, res := range scan.BuiltinResources() {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(builtinObjects[res]), &obj.Object); err != nil {
			t.Fatalf("%s: %v", res, err)
		}
		if obj.GetName() == "" {
			obj.SetName("paths-test")
		}
		gv, err := schema.ParseGroupVersion(obj.GetAPIVersion())
		if err != nil {
			t.Fatal(err)
		}
		plural, _, _ := strings.Cut(res, ".")
		gvr := gv.WithResource(plural)
		var ri dynamic.ResourceInterface = dyn.Resource(gvr)
		key := scan.Resource(res).KeyPrefix("/registry") + obj.GetName()
		switch obj.GetKind() {
		case "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "CSIDriver", "StorageClass",
			"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService", "CustomResourceDefinition", "IngressClass":
		default:
			ri = dyn.Resource(gvr).Namespace("default")
			key = scan.Resource(res).KeyPrefix("/registry") + "default/" + obj.GetName()
		}
		if _, err := ri.Create(ctx, &obj, metav1.CreateOptions{}); err != nil {
			t.Errorf("create %s: %v", res, err)
			continue
		}
		resp, err := cp.Etcd().Get(ctx, key, clientv3CountOnly()...)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 1 {
			t.Errorf("%s: created, but etcd has no %s", res, key)
		}
	}

	// Names are refused unless built-in or a CRD stored in this etcd; a
	// CRD's objects are read from <prefix>/<group>/<plural>/.
	for _, bad := range []string{"secret", "deploymnets.apps", "widgets.other.example.com"} {
		if _, err := scan.Resolve(ctx, cp.Etcd(), "/registry", []scan.Resource{scan.Resource(bad)}); err == nil {
			t.Errorf("Resolve(%q) accepted an unknown resource", bad)
		}
	}
	if _, err := scan.ParseResources("*.*"); err == nil {
		t.Error("ParseResources accepted a wildcard")
	}
	tg, err := scan.Resolve(ctx, cp.Etcd(), "/registry", []scan.Resource{"widgets.paths.example.com", "deployments"})
	if err != nil || tg[0].KeyPrefix != "/registry/paths.example.com/widgets/" || tg[1].Resource != "deployments.apps" || tg[1].KeyPrefix != "/registry/deployments/" {
		t.Fatalf("Resolve of a CRD and a short built-in name: %+v %v", tg, err)
	}
	if err := scan.CheckPrefix(ctx, cp.Etcd(), "/registry"); err != nil {
		t.Fatal(err)
	}
	if err := scan.CheckPrefix(ctx, cp.Etcd(), "/wrong"); err == nil {
		t.Fatal("CheckPrefix accepted a prefix without namespaces/default")
	}
}

func clientv3CountOnly() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithCountOnly()} }
