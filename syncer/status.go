package syncer

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// Ready condition reasons: each tells the user what to look at.
const (
	ReasonSynced           = "Synced"
	ReasonVaultUnavailable = "VaultUnavailable"
	ReasonPermissionDenied = "PermissionDenied"
	ReasonNotFound         = "SourceNotFound"
	ReasonInvalid          = "InvalidSpec"
	ReasonConflict         = "SecretConflict"
	ReasonExpired          = "Expired"
	ReasonAuthFailed       = "AuthFailed"
	ReasonSecretWrite      = "SecretWriteFailed"
	// ReasonSecretMissing: the Secret is gone (deleted by hand, or at its
	// expiry) and the pass that writes it again waits for its turn.
	ReasonSecretMissing = "SecretMissing"
	// ReasonRenewDenied: Vault refused to renew the lease in both forms;
	// the message names the policy line to add.
	ReasonRenewDenied = "RenewDenied"
	// ReasonPending: new credentials were issued and the Secret is being
	// written; Ready turns True once it holds them.
	ReasonPending = "Pending"
)

// ConditionPreviousRevoked reports the revocation of replaced leases; it is
// False when Vault refuses it, which is a policy to fix, not a retry.
const ConditionPreviousRevoked = "PreviousLeaseRevoked"

// statusRecorder keeps the VaultSecret's status and events: conditions are
// set in memory during a pass and written once at its end.
type statusRecorder struct {
	Client    client.Client
	APIReader client.Reader
	Clock     clock.PassiveClock
	Recorder  events.EventRecorder
	// wrote is told the resourceVersion of every status write.
	wrote func(key client.ObjectKey, resourceVersion string)
	// update writes status (nil: Client's status writer): see
	// MetadataAnswers.
	update func(context.Context, *v1alpha1.VaultSecret) error
}

// setReady sets the Ready condition of the generation seen.
func (s *statusRecorder) setReady(vs *v1alpha1.VaultSecret, status metav1.ConditionStatus, reason, msg string) {
	s.setCondition(vs, "Ready", status, reason, msg)
}

func (s *statusRecorder) setCondition(vs *v1alpha1.VaultSecret, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&vs.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: vs.Generation,
		LastTransitionTime: metav1.NewTime(s.Clock.Now()),
	})
}

// setFailed sets Ready=False for a failure of this generation and tells
// whether it is the first (for an event). The first failure of a
// generation starts the back-off count, even when Ready was already False
// for an older spec (SetStatusCondition keeps lastTransitionTime while
// the status stays False): else a new spec would be retried as if it had
// been failing all along.
func (s *statusRecorder) setFailed(vs *v1alpha1.VaultSecret, reason, msg string) (first bool) {
	first = FailingSince(meta.FindStatusCondition(vs.Status.Conditions, "Ready"), vs.Generation).IsZero()
	s.setReady(vs, metav1.ConditionFalse, reason, msg)
	if first {
		meta.FindStatusCondition(vs.Status.Conditions, "Ready").LastTransitionTime = metav1.NewTime(s.Clock.Now())
	}
	return first
}

// write writes vs's status when it differs from orig. The controller is
// the status's only writer, so on a conflict (a stale copy) it reapplies
// the same status to the latest object: losing it would forget a lease.
func (s *statusRecorder) write(ctx context.Context, vs *v1alpha1.VaultSecret, orig *v1alpha1.VaultSecretStatus) error {
	if orig != nil && equality.Semantic.DeepEqual(*orig, vs.Status) {
		return nil
	}
	st := vs.Status.DeepCopy()
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := s.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), vs); err != nil {
				return err
			}
			vs.Status = *st
		}
		first = false
		if s.update != nil {
			return s.update(ctx, vs)
		}
		return s.Client.Status().Update(ctx, vs)
	})
	if err == nil && s.wrote != nil {
		s.wrote(client.ObjectKeyFromObject(vs), vs.ResourceVersion)
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update status of VaultSecret %s/%s: %w", vs.Namespace, vs.Name, err)
	}
	if orig != nil {
		*orig = *vs.Status.DeepCopy()
	}
	return nil
}

func (s *statusRecorder) event(vs *v1alpha1.VaultSecret, typ, reason, action, format string, args ...any) {
	if s.Recorder != nil {
		s.Recorder.Eventf(vs, nil, typ, reason, action, format, args...)
	}
}
