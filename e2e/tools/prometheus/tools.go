//go:build tools

// Package tools records the commands this module builds: Prometheus, which
// the e2e tests scrape the components with, and promtool, which unit-tests
// the chart's alerting rules.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
