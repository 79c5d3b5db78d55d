// The two long-running server processes of a cluster: serve-apiserver (an embedded etcd and the real
// kube-apiserver command with an audit log of writes, one per process since the API server keeps process-global
// state) and serve-controller-manager (the real kube-controller-manager with the controllers the env needs).
package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func serveAPIServer(dir, cluster string) error {
	env, err := load(dir)
	if err != nil {
		return err
	}
	ports, err := env.ports(cluster)
	if err != nil {
		return err
	}
	etcd, err := startEtcd(filepath.Join(env.clusterDir(cluster), "etcd"), ports)
	if err != nil {
		return fmt.Errorf("etcd of %s: %w", cluster, err)
	}
	defer etcd.Close()

	policy, err := writeAuditPolicy(env.clusterDir(cluster))
	if err != nil {
		return err
	}
	pki := pkiDir(env.clusterDir(cluster))
	p := func(name string) string { return filepath.Join(pki, name) }
	args := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", ports.EtcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports.APIServer),
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
		"--client-ca-file=" + p("ca.crt"),
		"--token-auth-file=" + p("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		// No Endpoints for the kubernetes Service: nothing here runs in pods, and the reconciler would fight
		// over the loopback address.
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		// The aggregation layer: the API server proxies to aggregated servers as front-proxy-client, and
		// publishes the front-proxy CA in kube-system/extension-apiserver-authentication for them.
		"--requestheader-client-ca-file=" + p("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p("front-proxy-client.crt"),
		"--proxy-client-key-file=" + p("front-proxy-client.key"),
		// Writes only (see auditPolicy), one JSON line per request once answered, in <cluster>/audit.log.
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + filepath.Join(env.clusterDir(cluster), "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=100",
		"--audit-log-maxbackup=1",
		// CLAIMSYNC_ENV_PROFILING=1 at `env up` serves Go's pprof under /debug/pprof (for the benchmark's
		// question of where an API server's CPU goes: README "Performance").
		"--profiling=" + fmt.Sprint(os.Getenv("CLAIMSYNC_ENV_PROFILING") == "1"),
		"--v=1",
	}
	cmd := apiserver.NewAPIServerCommand()
	cmd.SetArgs(args)
	return cmd.Execute()
}

// auditPolicy records each write request (not reads, watches or health checks) at Metadata level: who (user,
// impersonated user), what verb on which object, and the response code; only once answered (no RequestReceived
// stage), so each write is one line.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func writeAuditPolicy(clusterDir string) (string, error) {
	path := filepath.Join(clusterDir, "audit-policy.yaml")
	return path, os.WriteFile(path, []byte(auditPolicy), 0o644)
}

func startEtcd(dataDir string, ports clusterPorts) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = dataDir
	// A test env: losing the last writes on a machine crash is fine; an fsync per write is not.
	cfg.UnsafeNoFsync = true
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports.EtcdClient)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports.EtcdPeer)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// etcd logs every slow request at warn level; only errors matter here.
	cfg.LogLevel = "error"
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-etcd.Server.ReadyNotify():
		return etcd, nil
	case err := <-etcd.Err():
		etcd.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		etcd.Close()
		return nil, fmt.Errorf("not ready after 60s (data in %s)", dataDir)
	}
}

func serveControllerManager(dir, cluster string) error {
	env, err := load(dir)
	if err != nil {
		return err
	}
	if _, err := env.ports(cluster); err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + env.kubeconfig(cluster),
		// The garbage collector removes dependents of deleted owners (a claim's Secret, composed objects,
		// Foreground deletion); the namespace controller empties and removes deleted namespaces.
		"--controllers=garbage-collector-controller,namespace-controller",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"--concurrent-namespace-syncs=5",
		"--v=1",
	}
	cmd := controllermanager.NewControllerManagerCommand()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		return err
	}
	os.Exit(0)
	return nil
}
