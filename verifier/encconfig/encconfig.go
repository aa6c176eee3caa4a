// Package encconfig reads a kube-apiserver EncryptionConfiguration and
// says, per resource, which providers it lists and whether writes are
// encrypted by a KMS v2 provider.
package encconfig

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

type file struct {
	Kind      string `json:"kind"`
	Resources []struct {
		Resources []string   `json:"resources"`
		Providers []provider `json:"providers"`
	} `json:"resources"`
}

type provider struct {
	KMS *struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
	} `json:"kms,omitempty"`
	Identity  *struct{} `json:"identity,omitempty"`
	AESCBC    *keys     `json:"aescbc,omitempty"`
	AESGCM    *keys     `json:"aesgcm,omitempty"`
	Secretbox *keys     `json:"secretbox,omitempty"`
}

type keys struct {
	Keys []struct {
		Name string `json:"name"`
	} `json:"keys"`
}

// label names a provider as the verifier labels stored values.
func (p provider) label() string {
	switch {
	case p.KMS != nil:
		v := p.KMS.APIVersion
		if v == "" {
			v = "v1"
		}
		return "kms:" + v + ":" + p.KMS.Name
	case p.Identity != nil:
		return "identity"
	case p.AESCBC != nil:
		return "aescbc"
	case p.AESGCM != nil:
		return "aesgcm"
	case p.Secretbox != nil:
		return "secretbox"
	}
	return "unknown"
}

// Resource is what the configuration says of one resource.
type Resource struct {
	Resource  string   `json:"resource"`
	Providers []string `json:"providers"`
	// Encrypted is true when the first (writing) provider encrypts.
	Encrypted bool `json:"encrypted"`
	// Problems says what an operator should fix; empty when the first
	// provider is the expected KMS v2 provider.
	Problems []string `json:"problems,omitempty"`
}

func load(path string) (file, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return file{}, fmt.Errorf("--encryption-config: %w", err)
	}
	var f file
	if err := yaml.Unmarshal(b, &f); err != nil {
		return file{}, fmt.Errorf("--encryption-config %s: %w", path, err)
	}
	if f.Kind != "EncryptionConfiguration" {
		return file{}, fmt.Errorf("--encryption-config %s: kind is %q, want EncryptionConfiguration", path, f.Kind)
	}
	return f, nil
}

// Encrypted lists the resources the configuration names with the KMS v2
// provider among their providers (writing or still reading), in file
// order; wildcard entries ("*.*", "*.apps") cannot be scanned by name and
// are returned apart so the caller can say they were not scanned.
func Encrypted(path, provider string) (names, wildcards []string, err error) {
	f, err := load(path)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for _, group := range f.Resources {
		uses := false
		for _, p := range group.Providers {
			if p.label() == "kms:v2:"+provider {
				uses = true
			}
		}
		if !uses {
			continue
		}
		for _, r := range group.Resources {
			if seen[r] {
				continue
			}
			seen[r] = true
			if strings.Contains(r, "*") {
				wildcards = append(wildcards, r)
			} else {
				names = append(names, r)
			}
		}
	}
	return names, wildcards, nil
}

// Check reads path and reports on each resource (such as "secrets" or
// "widgets.example.com") for the KMS v2 provider named provider.
func Check(path, provider string, resources []string) ([]Resource, error) {
	f, err := load(path)
	if err != nil {
		return nil, err
	}
	var out []Resource
	for _, res := range resources {
		r := Resource{Resource: res}
		for _, group := range f.Resources {
			if !matches(group.Resources, res) {
				continue
			}
			for _, p := range group.Providers {
				r.Providers = append(r.Providers, p.label())
			}
			break // the first matching entry wins, as in kube-apiserver
		}
		switch {
		case len(r.Providers) == 0:
			r.Problems = append(r.Problems, "not listed: stored in plaintext")
		case r.Providers[0] == "identity":
			r.Problems = append(r.Problems, "identity is first: new writes are stored in plaintext")
		case r.Providers[0] != "kms:v2:"+provider:
			r.Encrypted = true
			r.Problems = append(r.Problems, fmt.Sprintf("first provider is %s, not kms:v2:%s", r.Providers[0], provider))
		default:
			r.Encrypted = true
		}
		for _, p := range r.Providers {
			if strings.HasPrefix(p, "kms:v1:") {
				r.Problems = append(r.Problems, p+" is KMS v1, deprecated: migrate to v2")
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// matches follows kube-apiserver's forms: "secrets", "widgets.example.com",
// "*.example.com", "*.*".
func matches(list []string, res string) bool {
	_, group, _ := strings.Cut(res, ".")
	for _, r := range list {
		switch {
		case r == res, r == "*.*":
			return true
		case r == "*."+group && group != "":
			return true
		case r == "*." && group == "":
			return true
		}
	}
	return false
}
