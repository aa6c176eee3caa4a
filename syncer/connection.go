package syncer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
	"github.com/vaultkms/vaultkms/internal/vault"
)

const (
	// DefaultConnection names the Vault of the controller's flags, used by
	// a VaultAuth without spec.connectionRef (and by inline spec.auth).
	DefaultConnection = "default"
	// ReasonConnectionNotFound: spec.connectionRef names no
	// ClusterVaultConnection. Nothing is sent to any Vault.
	ReasonConnectionNotFound = "ConnectionNotFound"
	// ReasonConnectionNotAllowed: the connection's allowedNamespaces does
	// not select the VaultAuth's namespace. Nothing is sent to its address.
	ReasonConnectionNotAllowed = "ConnectionNotAllowed"
	// ReasonConnectionInvalid: the connection's spec cannot be used (its
	// address, say); its own status names the field.
	ReasonConnectionInvalid = "ConnectionInvalid"
	// connectionRefIndex indexes VaultAuths by the connection they name.
	connectionRefIndex = "spec.connectionRef.name"
)

// connectionNotFoundError is a spec.connectionRef naming no connection.
type connectionNotFoundError struct{ vaultAuth, name string }

func (e *connectionNotFoundError) Error() string {
	return fmt.Sprintf("VaultAuth %s: spec.connectionRef.name: no ClusterVaultConnection %q; ask an administrator to create it, or name an existing one (or remove connectionRef to use the controller's default Vault)", e.vaultAuth, e.name)
}

// connectionNotAllowedError is a connection whose allowedNamespaces does
// not select the VaultAuth's namespace.
type connectionNotAllowedError struct{ vaultAuth, name, namespace string }

func (e *connectionNotAllowedError) Error() string {
	return fmt.Sprintf("VaultAuth %s: spec.connectionRef.name: ClusterVaultConnection %q does not allow namespace %s; an administrator must select it in the connection's spec.allowedNamespaces", e.vaultAuth, e.name, e.namespace)
}

// connectionInvalidError is a connection whose spec cannot be used.
type connectionInvalidError struct {
	name string
	err  error
}

// Error names the field at fault but not its value: the VaultAuth's
// status is read by tenants, and the connection's own status by
// administrators holds the details.
func (e *connectionInvalidError) Error() string {
	what := "its spec"
	var fe *fieldError
	if errors.As(e.err, &fe) {
		what = fe.reason
	}
	return fmt.Sprintf("spec.connectionRef.name: ClusterVaultConnection %q cannot be used (%s); an administrator must fix it (see the connection's status)", e.name, what)
}

func (e *connectionInvalidError) Unwrap() error { return e.err }

// connectionReason is the Ready reason of a connection problem, "" for
// any other error.
func connectionReason(err error) string {
	var nf *connectionNotFoundError
	var na *connectionNotAllowedError
	var inv *connectionInvalidError
	switch {
	case errors.As(err, &nf):
		return ReasonConnectionNotFound
	case errors.As(err, &na):
		return ReasonConnectionNotAllowed
	case errors.As(err, &inv):
		return ReasonConnectionInvalid
	}
	return ""
}

// connection is a VaultAuth's resolved connection: which Vault its
// tokens belong to.
type connection struct {
	// Name is the ClusterVaultConnection's name, DefaultConnection for
	// the flags' Vault.
	Name string
	// Key tells tokens of this Vault from any other's: the name and a
	// hash of the address and Vault namespace, so a connection edited to
	// another address never reuses a token of the first. Empty for the
	// default connection, whose token keys predate connections.
	Key string
	// Spec is the connection's spec; nil for the default connection.
	Spec *v1alpha1.ClusterVaultConnectionSpec
}

// connectionName is the connection a VaultAuth names.
func connectionName(va *v1alpha1.VaultAuth) string {
	if va == nil || va.Spec.ConnectionRef == nil || va.Spec.ConnectionRef.Name == "" {
		return DefaultConnection
	}
	return va.Spec.ConnectionRef.Name
}

// connectionKey identifies the Vault a connection's tokens belong to.
func connectionKey(name string, spec *v1alpha1.ClusterVaultConnectionSpec) string {
	return name + "@" + shortHash(struct{ Address, Namespace string }{normalizeAddress(spec.Address), spec.Namespace})
}

// normalizeAddress drops the spaces around the commas, which change
// nothing about where requests go.
func normalizeAddress(s string) string {
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, ",")
}

// namespaceAllowed applies a connection's allowedNamespaces to a
// namespace's labels: unset allows none, {} allows every namespace.
func namespaceAllowed(sel *metav1.LabelSelector, nsLabels map[string]string) (bool, error) {
	if sel == nil {
		return false, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, fmt.Errorf("spec.allowedNamespaces: %w", err)
	}
	return s.Matches(labels.Set(nsLabels)), nil
}

// Ready reasons of a ClusterVaultConnection; each names the field to fix.
const (
	ReasonConnectionValid  = "Valid"
	ReasonNameReserved     = "NameReserved"
	ReasonAddressInvalid   = "AddressInvalid"
	ReasonAllowedNsInvalid = "AllowedNamespacesInvalid"
	ReasonCACertInvalid    = "CACertInvalid"
)

// fieldError is a connection spec's problem: the Ready reason and a
// message naming the field and the fix.
type fieldError struct{ reason, msg string }

func (e *fieldError) Error() string { return e.msg }

// checkConnectionSpec finds, without any I/O, what makes a connection's
// spec unusable; the error names the field.
func checkConnectionSpec(name string, spec *v1alpha1.ClusterVaultConnectionSpec) error {
	if name == DefaultConnection {
		return &fieldError{ReasonNameReserved, `metadata.name: "default" is the controller's own Vault (set by its flags); give this connection another name`}
	}
	if _, err := vault.ParseAddresses(spec.Address); err != nil {
		return &fieldError{ReasonAddressInvalid, "spec.address " + strings.TrimPrefix(err.Error(), "--vault-addr ")}
	}
	if spec.AllowedNamespaces != nil {
		if _, err := metav1.LabelSelectorAsSelector(spec.AllowedNamespaces); err != nil {
			return &fieldError{ReasonAllowedNsInvalid, "spec.allowedNamespaces: " + err.Error()}
		}
	}
	return nil
}

// connectionResolver finds a VaultAuth's connection and decides whether
// its namespace may use it, from the cache alone: no request leaves the
// process, and none can reach a connection's address before this says
// yes.
type connectionResolver struct {
	// Reader reads ClusterVaultConnections and Namespaces (the cache).
	Reader client.Reader
}

// resolve returns the VaultAuth's connection, or why it cannot use one.
func (r *connectionResolver) resolve(ctx context.Context, va *v1alpha1.VaultAuth) (*connection, error) {
	name := connectionName(va)
	if name == DefaultConnection {
		return &connection{Name: DefaultConnection}, nil
	}
	var cvc v1alpha1.ClusterVaultConnection
	if err := r.Reader.Get(ctx, types.NamespacedName{Name: name}, &cvc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &connectionNotFoundError{vaultAuth: va.Name, name: name}
		}
		return nil, fmt.Errorf("read ClusterVaultConnection %q: %w", name, err)
	}
	var ns corev1.Namespace
	if err := r.Reader.Get(ctx, types.NamespacedName{Name: va.Namespace}, &ns); err != nil {
		return nil, fmt.Errorf("read namespace %s for ClusterVaultConnection %q: %w", va.Namespace, name, err)
	}
	// Allowed first: a tenant outside the connection learns nothing of
	// its spec, not even that it is broken.
	ok, err := namespaceAllowed(cvc.Spec.AllowedNamespaces, ns.Labels)
	if err != nil {
		return nil, &connectionInvalidError{name: name, err: &fieldError{ReasonAllowedNsInvalid, err.Error()}}
	}
	if !ok {
		return nil, &connectionNotAllowedError{vaultAuth: va.Name, name: name, namespace: va.Namespace}
	}
	if err := checkConnectionSpec(name, &cvc.Spec); err != nil {
		return nil, &connectionInvalidError{name: name, err: err}
	}
	// What the spec alone does not tell (a CA Secret missing or without a
	// certificate) the connection's status does, for its generation.
	if c := meta.FindStatusCondition(cvc.Status.Conditions, "Ready"); c != nil && c.Status == metav1.ConditionFalse && c.ObservedGeneration == cvc.Generation {
		return nil, &connectionInvalidError{name: name, err: &fieldError{c.Reason, c.Message}}
	}
	spec := cvc.Spec
	return &connection{Name: name, Key: connectionKey(name, &spec), Spec: &spec}, nil
}
