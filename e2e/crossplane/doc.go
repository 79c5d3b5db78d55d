// Package tools only pins the version of Crossplane core that the e2e environment builds and runs; see tools.go.
package tools
