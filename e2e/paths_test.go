package e2e

import (
	"context"
	"slices"
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

	"cronjobs.batch":                                                 `{apiVersion: batch/v1, kind: CronJob, spec: {schedule: "0 0 * * *", jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}}`,
	"jobs.batch":                                                     `{apiVersion: batch/v1, kind: Job, spec: {suspend: true, template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}`,
	"horizontalpodautoscalers.autoscaling":                           `{apiVersion: autoscaling/v2, kind: HorizontalPodAutoscaler, spec: {maxReplicas: 2, scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}}}`,
	"leases.coordination.k8s.io":                                     `{apiVersion: coordination.k8s.io/v1, kind: Lease}`,
	"endpointslices.discovery.k8s.io":                                `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, addressType: IPv4, endpoints: []}`,
	"events.events.k8s.io":                                           `{apiVersion: events.k8s.io/v1, kind: Event, metadata: {name: paths-test-ev}, eventTime: "2026-01-01T00:00:00.000000Z", reportingController: x.io/y, reportingInstance: i, action: A, reason: R, type: Normal, regarding: {kind: Pod, name: x, namespace: default}}`,
	"ingresses.networking.k8s.io":                                    `{apiVersion: networking.k8s.io/v1, kind: Ingress, spec: {defaultBackend: {service: {name: s, port: {number: 80}}}}}`,
	"ingressclasses.networking.k8s.io":                               `{apiVersion: networking.k8s.io/v1, kind: IngressClass, spec: {controller: x.io/y}}`,
	"networkpolicies.networking.k8s.io":                              `{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, spec: {podSelector: {}}}`,
	"poddisruptionbudgets.policy":                                    `{apiVersion: policy/v1, kind: PodDisruptionBudget, spec: {minAvailable: 1}}`,
	"clusterrolebindings.rbac.authorization.k8s.io":                  `{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}`,
	"clusterroles.rbac.authorization.k8s.io":                         `{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole}`,
	"rolebindings.rbac.authorization.k8s.io":                         `{apiVersion: rbac.authorization.k8s.io/v1, kind: RoleBinding, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}`,
	"roles.rbac.authorization.k8s.io":                                `{apiVersion: rbac.authorization.k8s.io/v1, kind: Role}`,
	"priorityclasses.scheduling.k8s.io":                              `{apiVersion: scheduling.k8s.io/v1, kind: PriorityClass, value: 10}`,
	"csidrivers.storage.k8s.io":                                      `{apiVersion: storage.k8s.io/v1, kind: CSIDriver, spec: {}}`,
	"storageclasses.storage.k8s.io":                                  `{apiVersion: storage.k8s.io/v1, kind: StorageClass, provisioner: x.io/y}`,
	"mutatingwebhookconfigurations.admissionregistration.k8s.io":     `{apiVersion: admissionregistration.k8s.io/v1, kind: MutatingWebhookConfiguration}`,
	"validatingwebhookconfigurations.admissionregistration.k8s.io":   `{apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingWebhookConfiguration}`,
	"certificatesigningrequests.certificates.k8s.io":                 `{apiVersion: certificates.k8s.io/v1, kind: CertificateSigningRequest, spec: {signerName: example.com/signer, usages: [any], request: "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlJQnlqQ0NBVE1DQVFBd2dZa3hDekFKQmdOVkJBWVRBbFZUTVJNd0VRWURWUVFJRXdwRFlXeHBabTl5Ym1saApNUll3RkFZRFZRUUhFdzFOYjNWdWRHRnBiaUJXYVdWM01STXdFUVlEVlFRS0V3cEhiMjluYkdVZ1NXNWpNUjh3CkhRWURWUVFMRXhaSmJtWnZjbTFoZEdsdmJpQlVaV05vYm05c2IyZDVNUmN3RlFZRFZRUURFdzUzZDNjdVoyOXYKWjJ4bExtTnZiVENCbnpBTkJna3Foa2lHOXcwQkFRRUZBQU9CalFBd2dZa0NnWUVBcFp0WUpDSEo0VnBWWEhmVgpJbHN0UVRsTzRxQzAzaGpYK1prUHl2ZFlkMVE0K3FiQWVUd1htQ1VLWUhUaFZSZDVhWFNxbFB6eUlCd2llTVpyCldGbFJRZGRaMUl6WEFsVlJEV3dBbzYwS2VjcWVBWG5uVUsrNWZYb1RJL1VnV3NocmU4dEoreC9UTUhhUUtSL0oKY0lXUGhxYVFoc0p1elpidkFkR0E4MEJMeGRNQ0F3RUFBYUFBTUEwR0NTcUdTSWIzRFFFQkJRVUFBNEdCQUlobAo0UHZGcStlN2lwQVJnSTVaTStHWng2bXBDejQ0RFRvMEprd2ZSRGYrQnRyc2FDMHE2OGVUZjJYaFlPc3E0ZmtIClEwdUEwYVZvZzNmNWlKeENhM0hwNWd4YkpRNnpWNmtKMFRFc3VhYU9oRWtvOXNkcENvUE9uUkJtMmkvWFJEMkQKNmlOaDhmOHowU2hHc0ZxakRnRkh5RjNvK2xVeWorVUM2SDFRVzdibgotLS0tLUVORCBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0="}}`,
	"clustertrustbundles.certificates.k8s.io":                        `{apiVersion: certificates.k8s.io/v1, kind: ClusterTrustBundle, metadata: {name: "example.com:signer:paths"}, spec: {signerName: example.com/signer, trustBundle: "-----BEGIN CERTIFICATE-----\nMIIBBDCBt6ADAgECAgEAMAUGAytlcDAQMQ4wDAYDVQQDEwVyb290MTAiGA8wMDAx\nMDEwMTAwMDAwMFoYDzAwMDEwMTAxMDAwMDAwWjAQMQ4wDAYDVQQDEwVyb290MTAq\nMAUGAytlcAMhAF2MoFeGa97gK2NGT1h6p1/a1GlMXAXbcjI/OShyIobPozIwMDAP\nBgNVHRMBAf8EBTADAQH/MB0GA1UdDgQWBBTWDdK2CNQiHqRjPaAWYPPtIykQgjAF\nBgMrZXADQQCtom9WGl7m2SAa4tXM9Soo/mbInBsRhn187BMoqTAHInHchKup5/3y\nl1tYJSZZsEXnXrCvw2qLCBNif6+2YYgE\n-----END CERTIFICATE-----\n"}}`,
	"podcertificaterequests.certificates.k8s.io":                     `{apiVersion: certificates.k8s.io/v1, kind: PodCertificateRequest, spec: {signerName: example.com/signer, podName: pod-1, podUID: pod-uid-1, serviceAccountName: sa-1, serviceAccountUID: sa-uid-1, nodeName: node-1, nodeUID: node-uid-1, maxExpirationSeconds: 86400, stubPKCS10Request: "MIGNMEECAQAwDjEMMAoGA1UEAxMDZm9vMCowBQYDK2VwAyEA33notc99UJwFQmOojmMx5+OHh3eSxnCXPD8y4+3fCOigADAFBgMrZXADQQB201a14Mlk73XPyT7Ff/Ln0SIDL/YO4MIqPDYnpO1pA2s3vyo0H8qkvxo9WMNLeY5MZa2uG3gqZzXjjyWV38QA"}}`,
	"leasecandidates.coordination.k8s.io":                            `{apiVersion: coordination.k8s.io/v1beta1, kind: LeaseCandidate, spec: {leaseName: lease, binaryVersion: 0.1.0, emulationVersion: 0.1.0, strategy: OldestEmulationVersion}}`,
	"evictionrequests.lifecycle.k8s.io":                              `{apiVersion: lifecycle.k8s.io/v1alpha1, kind: EvictionRequest, metadata: {name: pod-eviction-request}, spec: {target: {pod: {name: my-workload, uid: 3d7fdff1-3fe5-48b9-b106-1ee24b0277f6}}, requester: drain.foo.com/bar, intent: Eviction}}`,
	"evictions.lifecycle.k8s.io":                                     `{apiVersion: lifecycle.k8s.io/v1alpha1, kind: Eviction, metadata: {name: pod-1-my-workload}, spec: {target: {pod: {name: my-workload, uid: 3d7fdff1-3fe5-48b9-b106-1ee24b0277f6}}}}`,
	"ipaddresses.networking.k8s.io":                                  `{apiVersion: networking.k8s.io/v1, kind: IPAddress, metadata: {name: 192.168.2.3}, spec: {parentRef: {resource: services, name: test, namespace: ns}}}`,
	"servicecidrs.networking.k8s.io":                                 `{apiVersion: networking.k8s.io/v1, kind: ServiceCIDR, spec: {cidrs: [192.168.0.0/16]}}`,
	"flowschemas.flowcontrol.apiserver.k8s.io":                       `{apiVersion: flowcontrol.apiserver.k8s.io/v1, kind: FlowSchema, spec: {priorityLevelConfiguration: {name: name1}}}`,
	"prioritylevelconfigurations.flowcontrol.apiserver.k8s.io":       `{apiVersion: flowcontrol.apiserver.k8s.io/v1, kind: PriorityLevelConfiguration, spec: {type: Limited, limited: {nominalConcurrencyShares: 3, limitResponse: {type: Reject}}}}`,
	"storageversionmigrations.storagemigration.k8s.io":               `{apiVersion: storagemigration.k8s.io/v1, kind: StorageVersionMigration, spec: {resource: {group: test-group, resource: test-resource}}}`,
	"storageversions.internal.apiserver.k8s.io":                      `{apiVersion: internal.apiserver.k8s.io/v1alpha1, kind: StorageVersion, metadata: {name: sv1.test}, spec: {}}`,
	"csinodes.storage.k8s.io":                                        `{apiVersion: storage.k8s.io/v1, kind: CSINode, spec: {drivers: [{name: test-driver, nodeID: localhost}]}}`,
	"csistoragecapacities.storage.k8s.io":                            `{apiVersion: storage.k8s.io/v1, kind: CSIStorageCapacity, storageClassName: sc1}`,
	"volumeattachments.storage.k8s.io":                               `{apiVersion: storage.k8s.io/v1, kind: VolumeAttachment, spec: {attacher: gce, nodeName: localhost, source: {persistentVolumeName: pv3}}}`,
	"volumeattributesclasses.storage.k8s.io":                         `{apiVersion: storage.k8s.io/v1, kind: VolumeAttributesClass, driverName: example.com/driver, parameters: {foo: bar}}`,
	"validatingadmissionpolicies.admissionregistration.k8s.io":       `{apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingAdmissionPolicy, spec: {matchConstraints: {resourceRules: [{resourceNames: [fakeName], apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}]}, validations: [{expression: "object.spec.replicas <= 5"}]}}`,
	"validatingadmissionpolicybindings.admissionregistration.k8s.io": `{apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingAdmissionPolicyBinding, spec: {policyName: paths-test, validationActions: [Deny]}}`,
	"mutatingadmissionpolicies.admissionregistration.k8s.io":         `{apiVersion: admissionregistration.k8s.io/v1, kind: MutatingAdmissionPolicy, spec: {matchConstraints: {resourceRules: [{resourceNames: [fakeName], apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}]}, reinvocationPolicy: IfNeeded, mutations: [{applyConfiguration: {expression: "Object{metadata: Object.metadata{labels: {'example': 'true'}}}"}, patchType: ApplyConfiguration}]}}`,
	"mutatingadmissionpolicybindings.admissionregistration.k8s.io":   `{apiVersion: admissionregistration.k8s.io/v1, kind: MutatingAdmissionPolicyBinding, spec: {policyName: paths-test}}`,
	"runtimeclasses.node.k8s.io":                                     `{apiVersion: node.k8s.io/v1, kind: RuntimeClass, handler: h3}`,
	"workloads.scheduling.k8s.io":                                    `{apiVersion: scheduling.k8s.io/v1beta1, kind: Workload, spec: {podGroupTemplates: [{name: group1, schedulingPolicy: {basic: {}}}]}}`,
	"podgroups.scheduling.k8s.io":                                    `{apiVersion: scheduling.k8s.io/v1beta1, kind: PodGroup, spec: {workloadRef: {workloadName: w, templateName: t}, schedulingPolicy: {basic: {}}}}`,
	"compositepodgroups.scheduling.k8s.io":                           `{apiVersion: scheduling.k8s.io/v1alpha3, kind: CompositePodGroup, spec: {workloadRef: {templateName: t, workloadName: w}, schedulingPolicy: {basic: {}}}}`,
	"deviceclasses.resource.k8s.io":                                  `{apiVersion: resource.k8s.io/v1, kind: DeviceClass}`,
	"devicetaintrules.resource.k8s.io":                               `{apiVersion: resource.k8s.io/v1, kind: DeviceTaintRule, spec: {taint: {key: example.com/taintkey, value: taintvalue, effect: NoSchedule}}}`,
	"resourceclaims.resource.k8s.io":                                 `{apiVersion: resource.k8s.io/v1, kind: ResourceClaim, spec: {devices: {requests: [{name: req-0, exactly: {deviceClassName: example-class, allocationMode: ExactCount, count: 1}}]}}}`,
	"resourceclaimtemplates.resource.k8s.io":                         `{apiVersion: resource.k8s.io/v1, kind: ResourceClaimTemplate, spec: {spec: {devices: {requests: [{name: req-0, exactly: {deviceClassName: example-class, allocationMode: ExactCount, count: 1}}]}}}}`,
	"resourceslices.resource.k8s.io":                                 `{apiVersion: resource.k8s.io/v1, kind: ResourceSlice, spec: {nodeName: worker1, driver: dra.example.com, pool: {name: worker1, resourceSliceCount: 1}}}`,
	"resourcepoolstatusrequests.resource.k8s.io":                     `{apiVersion: resource.k8s.io/v1alpha3, kind: ResourcePoolStatusRequest, spec: {driver: test-driver.example.com}}`,

	"apiservices.apiregistration.k8s.io":             `{apiVersion: apiregistration.k8s.io/v1, kind: APIService, metadata: {name: v1.paths.example.com}, spec: {group: paths.example.com, version: v1, groupPriorityMinimum: 1, versionPriority: 1, service: {namespace: default, name: s}}}`,
	"customresourcedefinitions.apiextensions.k8s.io": `{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: widgets.paths.example.com}, spec: {group: paths.example.com, names: {plural: widgets, kind: Widget}, scope: Namespaced, versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]}}`,
}

// TestStoragePaths compares the scanner's storage-path map with what a
// real kube-apiserver serves and stores. The API server runs with every
// group version and feature gate on, so alpha and beta resources (which a
// cluster may turn on, and EncryptionConfiguration then encrypts) are
// served too. Every resource its discovery lists that has storage (create
// and list, not a subresource) must be in the map: a resource added by a
// later Kubernetes fails here instead of being skipped by verify and trim.
// Then one object of every mapped resource is created and found in etcd
// at the path the scanner reads. Names the scanner cannot map are refused.
func TestStoragePaths(t *testing.T) {
	t.Parallel()
	if got, want := len(builtinObjects), len(scan.BuiltinResources()); got != want {
		t.Fatalf("%d test objects for %d mapped resources: every mapped resource needs one", got, want)
	}
	cp := harness.StartControlPlane(t, harness.ControlPlaneOptions{Args: map[string]string{
		"runtime-config": "api/all=true",
		"feature-gates":  "AllAlpha=true,AllBeta=true",
	}})
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Discovery before this test creates its CustomResourceDefinition, so
	// every group listed is the API server's own.
	_, lists, err := cp.Client.Discovery().ServerGroupsAndResources()
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	type served struct {
		gvr        schema.GroupVersionResource
		namespaced bool
	}
	servedBy := map[string]served{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "create") || !slices.Contains(r.Verbs, "list") {
				// Subresources, reviews (create only) and componentstatuses
				// (read only) are never stored.
				continue
			}
			name := r.Name
			if gv.Group != "" {
				name += "." + gv.Group
			}
			servedBy[name] = served{gvr: gv.WithResource(r.Name), namespaced: r.Namespaced}
		}
	}
	mapped := scan.BuiltinResources()
	var unmapped []string
	for name := range servedBy {
		if !slices.Contains(mapped, name) {
			unmapped = append(unmapped, name)
		}
	}
	slices.Sort(unmapped)
	if len(unmapped) > 0 {
		t.Errorf("the API server stores %s, which verifier/scan/paths.go has no etcd path for: verify and trim would not read them; add each there and an object of it to builtinObjects", strings.Join(unmapped, ", "))
	}

	for _, res := range mapped {
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
		sv, ok := servedBy[res]
		if !ok {
			t.Errorf("%s is mapped, but this API server does not serve it with every group version and feature gate on: a wrong name in verifier/scan/paths.go?", res)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(gv.WithResource(sv.gvr.Resource))
		key := scan.Resource(res).KeyPrefix("/registry") + obj.GetName()
		if sv.namespaced {
			ri = dyn.Resource(gv.WithResource(sv.gvr.Resource)).Namespace("default")
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
