//go:build !race

package harness

// raceEnabled tells that the test binary runs under the race detector, so
// the controllers it starts are built with it too.
const raceEnabled = false
