package syncer

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// validator checks what the schema cannot, before anything reaches
// Vault: a spec that can never make a valid Secret issues no lease.
type validator struct {
	// ControllerNamespace and ControllerServiceAccount are the
	// controller's own identity, which no VaultSecret may name.
	ControllerNamespace, ControllerServiceAccount string
	// Tenants refuses mounts under auth/ and sys/ and audiences outside
	// the administrator's allowlist.
	Tenants *Tenants
}

// requiredKeys are the data keys the API server demands of a Secret type
// (basic-auth wants one of its two, checked apart).
var requiredKeys = map[corev1.SecretType][]string{
	corev1.SecretTypeTLS:              {corev1.TLSCertKey, corev1.TLSPrivateKeyKey},
	corev1.SecretTypeDockerConfigJson: {corev1.DockerConfigJsonKey},
	corev1.SecretTypeSSHAuth:          {corev1.SSHAuthPrivateKey},
}

// pkiKeys are the keys a pki source writes.
var pkiKeys = map[string]bool{corev1.TLSCertKey: true, corev1.TLSPrivateKeyKey: true, "ca.crt": true}

func (v validator) validate(vs *v1alpha1.VaultSecret) error {
	if err := v.Tenants.CheckSpec(vs); err != nil {
		return err
	}
	if k := vs.Spec.Auth.Kubernetes; k != nil && v.ControllerServiceAccount != "" &&
		vs.Namespace == v.ControllerNamespace && k.ServiceAccountName == v.ControllerServiceAccount {
		return fmt.Errorf("spec.auth.kubernetes.serviceAccountName: %q is the controller's own service account; use a service account of the application", k.ServiceAccountName)
	}
	for _, k := range sortedKeys(vs.Spec.Target.Labels) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("spec.target.labels: key %q: %s", k, errs[0])
		}
		if errs := validation.IsValidLabelValue(vs.Spec.Target.Labels[k]); len(errs) > 0 {
			return fmt.Errorf("spec.target.labels[%q]: %s", k, errs[0])
		}
	}
	size := 0
	for _, k := range sortedKeys(vs.Spec.Target.Annotations) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("spec.target.annotations: key %q: %s", k, errs[0])
		}
		size += len(k) + len(vs.Spec.Target.Annotations[k])
	}
	if size > 256*1024 {
		return fmt.Errorf("spec.target.annotations: %d bytes in all, the API server allows 256 KiB", size)
	}
	if err := ValidateTemplates(vs.Spec.Target.Template); err != nil {
		return err
	}
	if hasPKI(vs) {
		// The keys of a certificate are known: the type must fit them.
		keys := map[string]bool{}
		for k := range pkiKeys {
			keys[k] = true
		}
		for k := range vs.Spec.Target.Template {
			keys[k] = true
		}
		if err := checkKeys(secretType(vs), keys); err != nil {
			return err
		}
	}
	return nil
}

// checkKeys tells whether data with these keys fits the Secret type.
func checkKeys(typ corev1.SecretType, keys map[string]bool) error {
	for _, k := range requiredKeys[typ] {
		if !keys[k] {
			return fmt.Errorf("spec.target.type %s needs key %q, which neither the source nor spec.target.template gives", typ, k)
		}
	}
	if typ == corev1.SecretTypeBasicAuth && !keys[corev1.BasicAuthUsernameKey] && !keys[corev1.BasicAuthPasswordKey] {
		return fmt.Errorf("spec.target.type %s needs key %q or %q, which neither the source nor spec.target.template gives", typ, corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey)
	}
	return nil
}

// shape checks Vault's keys, renders the templates and checks the result
// fits the Secret's type.
func shape(vs *v1alpha1.VaultSecret, data map[string][]byte, clk clock.PassiveClock) (map[string][]byte, error) {
	for _, k := range sortedKeys(data) {
		if _, templated := vs.Spec.Target.Template[k]; templated {
			continue
		}
		if errs := validation.IsConfigMapKey(k); len(errs) > 0 {
			return nil, fmt.Errorf("a key from Vault is not a valid Secret key (%s); rename it in Vault", errs[0])
		}
	}
	out := data
	if len(vs.Spec.Target.Template) > 0 {
		vars := make(map[string]string, len(data))
		for k, v := range data {
			vars[k] = string(v)
		}
		rendered, err := renderTemplates(vs.Spec.Target.Template, vars, clk.Now)
		if err != nil {
			return nil, err
		}
		out = make(map[string][]byte, len(data)+len(rendered))
		for k, v := range data {
			if validation.IsConfigMapKey(k) == nil {
				out[k] = v
			}
		}
		for k, v := range rendered {
			out[k] = v
		}
	}
	keys := make(map[string]bool, len(out))
	for k := range out {
		keys[k] = true
	}
	if err := checkKeys(secretType(vs), keys); err != nil {
		return nil, err
	}
	return out, nil
}
