//go:build tools

// Package tools pins the Crossplane v2 core binary used by the e2e environment (CLAIMSYNC_CROSSPLANE=v2).
// Build it with:
//
//	go build -o <dir>/crossplane github.com/crossplane/crossplane/v2/cmd/crossplane
package tools

import _ "github.com/crossplane/crossplane/v2/cmd/crossplane"
