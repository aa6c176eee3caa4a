package v1alpha1_test

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDateColumnsShowPastTimes: kubectl prints a date column as an age,
// and a time in the future as "<invalid>"; a column of a time to come
// (an expiry, the next rotation) must be a string. The RotationPolicy's
// NEXT column was a date, and printed "<invalid>" for every policy.
func TestDateColumnsShowPastTimes(t *testing.T) {
	past := map[string]bool{".metadata.creationTimestamp": true, ".status.scannedAt": true}
	files, err := filepath.Glob("../../charts/vaultkms/crds/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs found: %v", err)
	}
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Versions []struct {
					Name    string `json:"name"`
					Columns []struct {
						Name     string `json:"name"`
						Type     string `json:"type"`
						JSONPath string `json:"jsonPath"`
					} `json:"additionalPrinterColumns"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range crd.Spec.Versions {
			for _, c := range v.Columns {
				checked++
				if c.Type == "date" && !past[c.JSONPath] {
					t.Errorf("%s: column %s is a date of %s, which may be in the future (kubectl prints <invalid>): make it a string, or add the field here if it only ever holds a past time", filepath.Base(f), c.Name, c.JSONPath)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no printer columns found: the CRD layout changed")
	}
}
