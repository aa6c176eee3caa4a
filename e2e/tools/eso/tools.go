//go:build tools

// Package tools records the command this module builds: External Secrets
// Operator, which `make bench` measures beside vaultkms's controller. Its
// CRDs are read from the module cache.
package tools

import _ "github.com/external-secrets/external-secrets"
