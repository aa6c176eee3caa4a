package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// secretRow is one VaultSecret as `kubectl vaultkms secrets` shows it.
type secretRow struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Ready     string     `json:"ready"`
	Reason    string     `json:"reason,omitempty"`
	Secret    string     `json:"secret,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// TimeLeft is seconds until the Secret is deleted unless refreshed;
	// negative once that time has passed.
	TimeLeft  *int64     `json:"timeLeftSeconds,omitempty"`
	RefreshAt *time.Time `json:"refreshAt,omitempty"`
	Created   time.Time  `json:"created"`
}

// runSecrets lists VaultSecrets with the time their Secrets have left,
// which `kubectl get vaultsecret` cannot show: a CRD column of type date
// prints an age, and a time in the future as <invalid>.
func runSecrets(ctx context.Context, ios streams, args []string) error {
	fs := pflag.NewFlagSet("secrets", pflag.ContinueOnError)
	fs.SetOutput(ios.ErrOut)
	rules, overrides := bindKubeconfigFlags(fs)
	output := fs.StringP("output", "o", "table", "output format: table, json or yaml")
	all := fs.BoolP("all-namespaces", "A", false, "list VaultSecrets in every namespace")
	within := fs.Duration("expiring-within", 0, "only VaultSecrets whose Secret expires within this duration (or already has)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch *output {
	case "table", "json", "yaml":
	default:
		return usageErr("-o %q: use table, json or yaml", *output)
	}
	if *within < 0 {
		return usageErr("--expiring-within %s: use a positive duration such as 10m", *within)
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := loader.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	ns := ""
	if !*all {
		if ns, _, err = loader.Namespace(); err != nil {
			return fmt.Errorf("kubeconfig namespace: %w", err)
		}
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	list, err := dyn.Resource(v1alpha1.GroupVersion.WithResource("vaultsecrets")).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list vaultsecrets: %w", err)
	}
	now := time.Now()
	rows := make([]secretRow, 0, len(list.Items))
	for _, u := range list.Items {
		var vs v1alpha1.VaultSecret
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &vs); err != nil {
			return fmt.Errorf("vaultsecret %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		r := rowOf(&vs, now)
		if *within > 0 && (r.TimeLeft == nil || time.Duration(*r.TimeLeft)*time.Second > *within) {
			continue
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b secretRow) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return emit(ios.Out, *output, rows, func(w io.Writer) { secretsTable(w, rows, *all, now) })
}

// rowOf reads what the listing shows from a VaultSecret.
func rowOf(vs *v1alpha1.VaultSecret, now time.Time) secretRow {
	r := secretRow{Namespace: vs.Namespace, Name: vs.Name, Ready: "Unknown", Secret: vs.Status.SecretName, Created: vs.CreationTimestamp.Time}
	for _, c := range vs.Status.Conditions {
		if c.Type == "Ready" {
			r.Ready, r.Reason = string(c.Status), c.Reason
		}
	}
	if t := vs.Status.ExpiresAt; t != nil {
		at := t.Time
		left := int64(at.Sub(now) / time.Second)
		r.ExpiresAt, r.TimeLeft = &at, &left
	}
	if t := vs.Status.RefreshAt; t != nil {
		at := t.Time
		r.RefreshAt = &at
	}
	return r
}

// timeLeft says how long until t in kubectl's duration style ("59m",
// "2d3h"), or how long ago it passed.
func timeLeft(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.Sub(now)
	if d < 0 {
		return "expired " + duration.HumanDuration(-d) + " ago"
	}
	return duration.HumanDuration(d)
}

func secretsTable(w io.Writer, rows []secretRow, namespaces bool, now time.Time) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "No VaultSecrets found.")
		return
	}
	head := "NAME\tREADY\tREASON\tSECRET\tTIME LEFT\tREFRESH IN\tAGE"
	if namespaces {
		head = "NAMESPACE\t" + head
	}
	fmt.Fprintln(w, head)
	for _, r := range rows {
		if namespaces {
			fmt.Fprintf(w, "%s\t", r.Namespace)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Ready, dash(r.Reason), dash(r.Secret),
			timeLeft(r.ExpiresAt, now), timeLeft(r.RefreshAt, now), duration.HumanDuration(now.Sub(r.Created)))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
