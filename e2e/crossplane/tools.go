//go:build tools

// Package tools pins the Crossplane core binary used by the e2e environment.
// Build it with:
//
//	go build -o <dir>/crossplane github.com/crossplane/crossplane/cmd/crossplane
package tools

import _ "github.com/crossplane/crossplane/cmd/crossplane"
