// Package scope says which resources a scan of etcd covers: those named by
// --resources, else those kube-apiserver's EncryptionConfiguration
// encrypts with the vaultkms provider, else secrets. The auditor and
// kubectl-vaultkms take the same three flags, defined here once.
package scope

import (
	"fmt"

	"github.com/vaultkms/vaultkms/verifier/encconfig"
	"github.com/vaultkms/vaultkms/verifier/scan"
)

// FlagSet is what the standard library's flag.FlagSet and spf13/pflag's
// FlagSet have in common.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
}

// Flags are --resources, --encryption-config and --provider.
type Flags struct {
	Resources        string
	EncryptionConfig string
	// Provider is the KMS v2 provider's name in the EncryptionConfiguration
	// and in the key_id reports of kube-apiserver.
	Provider string
}

// Bind defines the flags on fs.
func (f *Flags) Bind(fs FlagSet) {
	fs.StringVar(&f.Resources, "resources", "", "resources to scan: secrets, configmaps, deployments.apps, <plural>.<group>, comma separated (default: those --encryption-config encrypts, else secrets)")
	fs.StringVar(&f.EncryptionConfig, "encryption-config", "", "kube-apiserver's EncryptionConfiguration file: the resources to scan and the provider order to check")
	fs.StringVar(&f.Provider, "provider", "vault", "name of the KMS v2 provider in the EncryptionConfiguration")
}

// Resolve returns the resources to scan. The second result names what the
// EncryptionConfiguration encrypts by wildcard ("*.*", "*.apps"), which
// cannot be scanned by name: the caller says it was not scanned, or
// refuses to start. A configuration that encrypts nothing by name with the
// provider is an error: a scan of nothing would prove nothing.
func (f *Flags) Resolve() (res []scan.Resource, wildcards []string, err error) {
	if f.Resources != "" {
		res, err := scan.ParseResources(f.Resources)
		return res, nil, err
	}
	if f.EncryptionConfig == "" {
		return []scan.Resource{"secrets"}, nil, nil
	}
	names, wild, err := encconfig.Encrypted(f.EncryptionConfig, f.Provider)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range names {
		res = append(res, scan.Resource(n))
	}
	if len(res) == 0 {
		return nil, wild, fmt.Errorf("--encryption-config %s lists no resource by name under --provider %q: check the provider's name, or name the resources with --resources", f.EncryptionConfig, f.Provider)
	}
	return res, wild, nil
}
