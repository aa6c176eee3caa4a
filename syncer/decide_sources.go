package syncer

import (
	"fmt"
	"strings"
	"time"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// decideSources is Decide for spec.sources: every source has its own
// schedule and, when dynamic, its own lease journal, decided by the same
// rules as spec.source's. A pass reads (or renews) only the sources due,
// unless the whole Secret must be written again (no Secret, a spec
// change, a hand edit, an adoption), and writes the Secret once.
func decideSources(o Observed, c passFacts, now time.Time) Plan {
	vs := o.VS
	st := vs.Status
	specs := vs.Spec.Sources
	var p Plan
	// spec.source's journal, left from before a switch to spec.sources.
	p.JournalPlan, _ = decideJournal(st.LeaseJournal, false, o, now)

	// The journals first: what the Secret holds decides what is current.
	// Journals past the end of spec.sources are of removed sources.
	n := max(len(specs), len(st.Sources))
	p.Sources = make([]SourcePlan, n)
	cur := make([]*v1alpha1.Lease, n)
	promotedAny := false
	for i := range n {
		var j v1alpha1.LeaseJournal
		if i < len(st.Sources) {
			j = st.Sources[i].LeaseJournal
		}
		leases := i < len(specs) && specs[i].Dynamic != nil
		p.Sources[i].JournalPlan, cur[i] = decideJournal(j, leases, o, now)
		promotedAny = promotedAny || p.Sources[i].Promote
	}

	var why string
	switch {
	case o.Secret == nil:
		why = "no Secret"
	case !o.Secret.Owned:
		why = "adopting an existing Secret (spec.target.adopt)"
	case c.sourceChanged:
		why = "spec changed"
	case o.Data == DataEdited && !promotedAny:
		if wait := RestoreBackoff(o.Restores, now.Sub(o.LastRestore)); wait > 0 {
			p.Action, p.Why, p.WakeAt = ActWait, "edited by hand; restore rate-limited", now.Add(wait)
			p.finish(o, c, promotedAny, currentRevokes(cur)...)
			return p
		}
		p.Restore, why = true, "edited by hand"
	}
	p.AllSources = why != ""

	var due []string
	var at []time.Time
	for i := range specs {
		sp := &p.Sources[i]
		var ss v1alpha1.SourceStatus
		if i < len(st.Sources) {
			ss = st.Sources[i]
		}
		reason := ""
		switch {
		case p.AllSources:
			sp.Read = true
		case sp.DropPending:
			sp.Read, reason = true, "new credentials never reached the Secret"
		case i >= len(st.Sources) || ss.Hash != sourceSpecHash(&specs[i]):
			sp.Read, reason = true, "not read with this spec yet"
		case specs[i].Dynamic != nil && cur[i] == nil:
			sp.Read, reason = true, "no lease recorded"
		case specs[i].Dynamic != nil:
			action, next := leaseDue(o, cur[i], ss.LastSyncTime, sp.Promote, now)
			switch action {
			case LeaseRenew:
				sp.Renew, reason = true, "lease due for renewal"
			case LeaseReissue:
				sp.Read, reason = true, "lease cannot reach the wanted lifetime"
			default:
				at = append(at, next)
			}
		default:
			next := timeOf(ss.RefreshAt)
			if specs[i].KV != nil {
				next = kvRefreshFrom(vs, next, ss.LastSyncTime, c.failing)
			}
			if ss.RefreshAt == nil || !now.Before(next) {
				sp.Read, reason = true, "refresh due"
			} else {
				at = append(at, next)
			}
		}
		if reason != "" {
			due = append(due, fmt.Sprintf("%d (%s)", i, reason))
		}
	}
	reads, renews := countSources(p.Sources)
	if reads > 0 && !p.AllSources {
		// The Secret holds a template's output under a key a source also
		// gives, not the source's value: only Vault has it, and the
		// templates are rendered again over every source's data.
		for i := range specs {
			if sp := &p.Sources[i]; !sp.Read && i < len(st.Sources) && shadowed(st.Sources[i].Keys, vs.Spec.Target.Template) {
				sp.Read, sp.Renew = true, false
				due = append(due, fmt.Sprintf("%d (a template key shadows one of its keys)", i))
			}
		}
		reads, renews = countSources(p.Sources)
	}
	if why == "" {
		why = "sources due: " + strings.Join(due, ", ")
	}
	switch {
	case reads > 0:
		p.Action, p.Why = ActFetch, why
	case renews > 0:
		p.Action, p.Why = ActRenew, why
	case c.metaChanged || !holdsCurrent(o.Secret, specs, cur):
		// (A current lease missing from the annotation is metadata: the
		// data HMAC vouches for the data.)
		p.Action, p.Why = ActWriteMetadata, "metadata changed"
	}
	if c.backingOff && (p.Action == ActFetch || p.Action == ActRenew) {
		p.Action, p.Why, p.WakeAt = ActWait, "retrying after a failure: "+why, c.retryAt
		for i := range p.Sources {
			p.Sources[i].Read, p.Sources[i].Renew = false, false
		}
	}
	p.finish(o, c, promotedAny, append(at, currentRevokes(cur)...)...)
	return p
}

// countSources counts the sources read and renewed by a plan.
func countSources(sps []SourcePlan) (reads, renews int) {
	for _, sp := range sps {
		if sp.Read {
			reads++
		}
		if sp.Renew {
			renews++
		}
	}
	return reads, renews
}

// holdsCurrent tells whether the Secret names the current lease of every
// dynamic source.
func holdsCurrent(sec *corev1Secret, specs []v1alpha1.Source, cur []*v1alpha1.Lease) bool {
	for i := range specs {
		if specs[i].Dynamic != nil && cur[i] != nil && !sec.holds(cur[i].ID) {
			return false
		}
	}
	return true
}

// currentRevokes is when the replaced lease of each current lease is due
// for revocation.
func currentRevokes(cur []*v1alpha1.Lease) []time.Time {
	out := make([]time.Time, 0, len(cur))
	for _, l := range cur {
		out = append(out, revokePreviousAt(l))
	}
	return out
}
