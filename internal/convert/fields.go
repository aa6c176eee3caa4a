package convert

import (
	"fmt"
	"sort"
	"strconv"
)

// node reads one mapping of a peer's manifest and remembers which keys
// were read, so that every key the conversion did not use can be named on
// stderr instead of silently lost.
type node struct {
	path     string // "spec.destination", for messages
	m        map[string]any
	seen     map[string]bool
	children map[string]*node
	warn     func(field, reason string)
}

func newNode(path string, m map[string]any, warn func(field, reason string)) *node {
	return &node{path: path, m: m, seen: map[string]bool{}, children: map[string]*node{}, warn: warn}
}

func (n *node) field(key string) string {
	if n.path == "" {
		return key
	}
	return n.path + "." + key
}

// has tells whether key is present, without consuming it.
func (n *node) has(key string) bool {
	if n == nil {
		return false
	}
	_, ok := n.m[key]
	return ok
}

func (n *node) take(key string) (any, bool) {
	if n == nil {
		return nil, false
	}
	v, ok := n.m[key]
	if ok {
		n.seen[key] = true
	}
	return v, ok
}

// str reads a string; a number or bool is taken as written.
func (n *node) str(key string) string {
	v, ok := n.take(key)
	if !ok || v == nil {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	}
	n.warn(n.field(key), fmt.Sprintf("expected a string, found %T; ignored", v))
	return ""
}

// boolean reads a bool; ok is false when the key is absent.
func (n *node) boolean(key string) (val, ok bool) {
	v, present := n.take(key)
	if !present || v == nil {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		n.warn(n.field(key), fmt.Sprintf("expected true or false, found %v; ignored", v))
		return false, false
	}
	return b, true
}

// integer reads a whole number, written as a number or a string.
func (n *node) integer(key string) (int, bool) {
	v, ok := n.take(key)
	if !ok || v == nil {
		return 0, false
	}
	switch v := v.(type) {
	case float64:
		if v == float64(int(v)) {
			return int(v), true
		}
	case int64:
		return int(v), true
	case string:
		if i, err := strconv.Atoi(v); err == nil {
			return i, true
		}
	}
	n.warn(n.field(key), fmt.Sprintf("expected a whole number, found %v; ignored", v))
	return 0, false
}

// child reads a nested mapping; nil when absent (a nil node reads as
// empty).
func (n *node) child(key string) *node {
	v, ok := n.take(key)
	if !ok || v == nil {
		return nil
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		n.warn(n.field(key), fmt.Sprintf("expected a mapping, found %T; ignored", v))
		return nil
	}
	c := newNode(n.field(key), m, n.warn)
	n.children[key] = c
	return c
}

// list reads a list of mappings.
func (n *node) list(key string) []*node {
	v, ok := n.take(key)
	if !ok || v == nil {
		return nil
	}
	items, isList := v.([]any)
	if !isList {
		n.warn(n.field(key), fmt.Sprintf("expected a list, found %T; ignored", v))
		return nil
	}
	var out []*node
	for i, it := range items {
		m, isMap := it.(map[string]any)
		path := fmt.Sprintf("%s[%d]", n.field(key), i)
		if !isMap {
			n.warn(path, fmt.Sprintf("expected a mapping, found %T; ignored", it))
			continue
		}
		c := newNode(path, m, n.warn)
		n.children[fmt.Sprintf("%s[%d]", key, i)] = c
		out = append(out, c)
	}
	return out
}

// strings reads a list of strings.
func (n *node) strings(key string) []string {
	v, ok := n.take(key)
	if !ok || v == nil {
		return nil
	}
	items, isList := v.([]any)
	if !isList {
		n.warn(n.field(key), fmt.Sprintf("expected a list of strings, found %T; ignored", v))
		return nil
	}
	var out []string
	for _, it := range items {
		if s, isStr := it.(string); isStr {
			out = append(out, s)
		}
	}
	return out
}

// stringMap reads a mapping of strings (labels, annotations).
func (n *node) stringMap(key string) map[string]string {
	c := n.child(key)
	if c == nil {
		return nil
	}
	out := map[string]string{}
	for _, k := range c.keys() {
		out[k] = c.str(k)
	}
	return out
}

// drop consumes key, naming it as having no equivalent, when present.
func (n *node) drop(key, reason string) {
	if _, ok := n.take(key); ok {
		n.warn(n.field(key), reason)
	}
}

// skip consumes keys that need no equivalent (defaults, status).
func (n *node) skip(keys ...string) {
	for _, k := range keys {
		n.take(k)
	}
}

func (n *node) keys() []string {
	if n == nil {
		return nil
	}
	ks := make([]string, 0, len(n.m))
	for k := range n.m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// leftovers names, depth first and sorted, every key nobody read.
func (n *node) leftovers() []string {
	if n == nil {
		return nil
	}
	var out []string
	for _, k := range n.keys() {
		if !n.seen[k] {
			out = append(out, n.field(k))
		}
	}
	ck := make([]string, 0, len(n.children))
	for k := range n.children {
		ck = append(ck, k)
	}
	sort.Strings(ck)
	for _, k := range ck {
		out = append(out, n.children[k].leftovers()...)
	}
	return out
}
