//go:build tools

// Package tools records the command this module builds: HashiCorp's Vault
// Secrets Operator, which `make bench` measures beside vaultkms's
// controller. Its CRDs are read from the module cache.
package tools

import _ "github.com/hashicorp/vault-secrets-operator"
