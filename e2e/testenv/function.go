// The env's composition function (e2e/function) on the control plane: the process, its TLS identity, and its
// registration with Crossplane.
//
// Crossplane runs a pipeline step by listing the FunctionRevisions labelled pkg.crossplane.io/package=<function
// name>, taking the one whose spec.desiredState is Active and dialling its status.endpoint over mutual TLS with
// the client certificate of TLS_CLIENT_CERTS_DIR (internal/xfn/function_runner.go, getClientConn, in v1.20 and
// v2). In a cluster the package runtime writes that endpoint after it made a Deployment and a Service; with
// PACKAGE_RUNTIME=External nothing writes it. Nothing on the composition path looks at the revision's health, so
// the env makes the FunctionRevision itself (no Function: that would make revisions of its own and fetch their
// image) and writes its status.endpoint. The revision controller still tries to fetch the package; with
// packagePullPolicy Never and a digest it fails at once, without the network, and marks the revision unhealthy,
// which nothing here reads. Crossplane v2 also checks, before it runs a Composition's pipeline, that the active revision lists
// the "composition" capability in status.capabilities (internal/xfn/capabilities.go); the env writes that too.
package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// functionName is the name the platform's Compositions give their pipeline step's functionRef.
const functionName = "claimsync-env"

func (e *environment) functionDir() string {
	return filepath.Join(e.clusterDir(controlPlane), "function")
}

func (e *environment) startFunction() error {
	if e.cfg.FunctionBin == "" {
		return errors.New("the control plane needs --function-bin (e2e/env passes it)")
	}
	tlsDir := filepath.Join(e.functionDir(), "tls")
	if err := ensureFunctionTLS(e.clusterDir(controlPlane), tlsDir); err != nil {
		return fmt.Errorf("certificates of the function: %w", err)
	}
	pidPath, logPath := e.pidPath(controlPlane, functionProcess), e.logPath(controlPlane, functionProcess)
	if _, alive := running(pidPath); !alive {
		address := fmt.Sprintf("127.0.0.1:%d", e.cfg.FunctionPort)
		if err := spawn(pidPath, logPath, nil, e.cfg.FunctionBin, "--address", address, "--tls-dir", tlsDir); err != nil {
			return err
		}
		if err := waitFor("the composition function", pidPath, logPath, 30*time.Second, func() error {
			conn, err := net.DialTimeout("tcp", address, time.Second)
			if err == nil {
				_ = conn.Close()
			}
			return err
		}); err != nil {
			return err
		}
	}
	return e.registerFunction()
}

// registerFunction makes the function's active FunctionRevision and points its status at the process.
func (e *environment) registerFunction() error {
	revision := fmt.Sprintf(`apiVersion: pkg.crossplane.io/v1
kind: FunctionRevision
metadata:
  name: %[1]s
  labels:
    pkg.crossplane.io/package: %[1]s
spec:
  desiredState: Active
  # Never fetched: the function runs as a process of the env. A digest, so that v2 does not even ask a registry
  # to resolve a tag before it finds that the package is not in its cache.
  image: claimsync.dev/e2e/function@sha256:0000000000000000000000000000000000000000000000000000000000000000
  packagePullPolicy: Never
  revision: 1
  ignoreCrossplaneConstraints: true
  skipDependencyResolution: true
`, functionName)
	path := filepath.Join(e.functionDir(), "functionrevision.yaml")
	if err := os.WriteFile(path, []byte(revision), 0o644); err != nil {
		return err
	}
	if err := e.kubectl(controlPlane, "apply", "--server-side", "--force-conflicts", "-f", path); err != nil {
		return err
	}
	// v1.20 has no status.capabilities and prunes it.
	status := fmt.Sprintf(`{"status": {"endpoint": "dns:///127.0.0.1:%d", "capabilities": ["composition"]}}`, e.cfg.FunctionPort)
	return e.kubectl(controlPlane, "patch", "functionrevisions.pkg.crossplane.io", functionName,
		"--subresource=status", "--type=merge", "-p", status)
}

// ensureFunctionTLS writes, unless already there, the function's serving certificate for 127.0.0.1, signed by
// the control plane's CA (which Crossplane's client trusts: it is ca.crt of TLS_CLIENT_CERTS_DIR), and that CA as
// the one the function accepts client certificates of.
func ensureFunctionTLS(clusterDir, tlsDir string) error {
	if _, err := os.Stat(filepath.Join(tlsDir, "tls.key")); err == nil {
		return nil
	}
	caPEM, err := os.ReadFile(filepath.Join(pkiDir(clusterDir), "ca.crt"))
	if err != nil {
		return err
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(pkiDir(clusterDir), "ca.key"))
	if err != nil {
		return err
	}
	ca, err := parseKeyPair(caPEM, caKeyPEM)
	if err != nil {
		return err
	}
	serving, err := newLeaf(ca, "claimsync-env-function", []string{"localhost"},
		[]net.IP{net.ParseIP("127.0.0.1")}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return err
	}
	// The key last: its presence says the set is complete.
	for _, f := range []struct {
		name    string
		content []byte
	}{{"ca.crt", caPEM}, {"tls.crt", certPEM(serving.cert)}, {"tls.key", keyPEM(serving.key)}} {
		if err := os.WriteFile(filepath.Join(tlsDir, f.name), f.content, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func parseKeyPair(certPEMBytes, keyPEMBytes []byte) (keyPair, error) {
	certBlock, _ := pem.Decode(certPEMBytes)
	keyBlock, _ := pem.Decode(keyPEMBytes)
	if certBlock == nil || keyBlock == nil {
		return keyPair{}, errors.New("the CA's certificate or key is not PEM")
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	var key *ecdsa.PrivateKey
	if key, err = x509.ParseECPrivateKey(keyBlock.Bytes); err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}
