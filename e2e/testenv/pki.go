// Certificates, keys and the admin token of one cluster, made once and kept in <cluster>/pki so that a restarted
// API server keeps its identity and every kubeconfig stays valid.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	stdbase64 "encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func pkiDir(clusterDir string) string { return filepath.Join(clusterDir, "pki") }

// ensurePKI writes, unless already there: the cluster CA and the API server's serving certificate, the
// front-proxy CA and the API server's front-proxy client certificate (for the aggregation layer), the service
// account signing key, the admin token, and for the control plane the client TLS files Crossplane insists on.
func ensurePKI(clusterDir string, forCrossplane bool) error {
	dir := pkiDir(clusterDir)
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA("claimsync-testenv-ca")
	if err != nil {
		return err
	}
	serving, err := newLeaf(ca, "kube-apiserver", []string{"localhost", "kubernetes", "kubernetes.default.svc"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	frontProxyCA, err := newCA("front-proxy-ca")
	if err != nil {
		return err
	}
	frontProxyClient, err := newLeaf(frontProxyCA, "front-proxy-client", nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	serviceAccount, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	token := make([]byte, 24)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":                 certPEM(ca.cert),
		"ca.key":                 keyPEM(ca.key),
		"apiserver.crt":          certPEM(serving.cert),
		"apiserver.key":          keyPEM(serving.key),
		"front-proxy-ca.crt":     certPEM(frontProxyCA.cert),
		"front-proxy-client.crt": certPEM(frontProxyClient.cert),
		"front-proxy-client.key": keyPEM(frontProxyClient.key),
		"sa.key":                 keyPEM(serviceAccount),
		"token":                  []byte(hex.EncodeToString(token)),
		// token,user,uid,"groups": the admin is in system:masters, which RBAC always allows.
		"tokens.csv": fmt.Appendf(nil, "%s,admin,admin,\"system:masters\"\n", hex.EncodeToString(token)),
	}
	pub, err := x509.MarshalPKIXPublicKey(&serviceAccount.PublicKey)
	if err != nil {
		return err
	}
	files["sa.pub"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	if forCrossplane {
		// Crossplane's client certificate for composition functions (see function.go); the CA is the cluster's.
		client, err := newLeaf(ca, "crossplane", nil, nil, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return err
		}
		tlsDir := filepath.Join(clusterDir, "crossplane", "tls")
		if err := os.MkdirAll(tlsDir, 0o700); err != nil {
			return err
		}
		files[filepath.Join("..", "crossplane", "tls", "ca.crt")] = certPEM(ca.cert)
		files[filepath.Join("..", "crossplane", "tls", "tls.crt")] = certPEM(client.cert)
		files[filepath.Join("..", "crossplane", "tls", "tls.key")] = keyPEM(client.key)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "done"), nil, 0o600)
}

func newCA(commonName string) (keyPair, error) {
	return newCert(keyPair{}, &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	})
}

func newLeaf(ca keyPair, commonName string, dnsNames []string, ips []net.IP, usage ...x509.ExtKeyUsage) (keyPair, error) {
	return newCert(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: usage,
		DNSNames:    dnsNames,
		IPAddresses: ips,
	})
}

// newCert signs tmpl with a fresh key, by the issuer, or by itself when the issuer is empty; valid for ten years.
func newCert(issuer keyPair, tmpl *x509.Certificate) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	parent, signer := tmpl, key
	if issuer.cert != nil {
		parent, signer = issuer.cert, issuer.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	return keyPair{cert: cert, key: key}, err
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// readToken returns the admin token of a cluster.
func readToken(clusterDir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(pkiDir(clusterDir), "token"))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no admin token in %s", pkiDir(clusterDir))
	}
	return string(raw), err
}

func base64(b []byte) string { return stdbase64.StdEncoding.EncodeToString(b) }
