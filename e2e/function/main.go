// Command function is the test environment's composition function: it composes the objects of the resource
// templates in its input, with simple field-path patches and connection details, which is what the example
// platform's Compositions did natively (mode: Resources) before Crossplane v2 removed that mode. The env runs it
// as a process and registers it with Crossplane (see e2e/testenv/function.go).
package main

import (
	"flag"
	"fmt"
	"os"

	function "github.com/crossplane/function-sdk-go"
)

func main() {
	address := flag.String("address", "127.0.0.1:9443", "the address to serve gRPC on")
	tlsDir := flag.String("tls-dir", "", "folder with ca.crt (of the clients to accept), tls.crt and tls.key")
	flag.Parse()
	err := function.Serve(composer{},
		function.Listen("tcp", *address),
		function.MTLSCertificates(*tlsDir),
		// No metrics server: it would take port 8080.
		function.WithMetricsServer(""))
	if err != nil {
		fmt.Fprintf(os.Stderr, "function: %v\n", err)
		os.Exit(1)
	}
}
