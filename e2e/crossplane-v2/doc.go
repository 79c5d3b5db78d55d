// Package tools only pins the version of Crossplane v2 core that the e2e environment builds and runs; see tools.go.
package tools
