// The env's folder and its persisted layout: which ports each cluster uses, where its data, certificates,
// kubeconfig and logs live. Ports are chosen once and kept, so a restarted cluster answers at the same address.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// The two clusters, in start order.
var clusterNames = []string{"app", "controlplane"}

const controlPlane = "controlplane"

type clusterPorts struct {
	APIServer  int `json:"apiserver"`
	EtcdClient int `json:"etcdClient"`
	EtcdPeer   int `json:"etcdPeer"`
}

type config struct {
	Clusters         map[string]clusterPorts `json:"clusters"`
	CrossplaneBin    string                  `json:"crossplaneBin"`
	CrossplaneCRDs   string                  `json:"crossplaneCRDs"`
	PlatformDir      string                  `json:"platformDir"`
	CrossplaneHealth int                     `json:"crossplaneHealthPort"`
	CrossplaneMetric int                     `json:"crossplaneMetricsPort"`
}

type setup struct {
	crossplaneBin, crossplaneCRDs, platformDir string
}

type environment struct {
	dir string
	cfg config
}

func configPath(dir string) string { return filepath.Join(dir, "env.json") }

// load reads an env that `up` prepared before.
func load(dir string) (*environment, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(configPath(abs))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no env in %s: run `e2e/env up` first", abs)
		}
		return nil, err
	}
	env := &environment{dir: abs}
	if err := json.Unmarshal(raw, &env.cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", configPath(abs), err)
	}
	return env, nil
}

// prepare loads the env in dir, or lays out a new one: free ports, certificates, tokens.
func prepare(dir string, s setup) (*environment, error) {
	env, err := load(dir)
	if err != nil {
		abs, aerr := filepath.Abs(dir)
		if aerr != nil {
			return nil, aerr
		}
		env = &environment{dir: abs, cfg: config{Clusters: map[string]clusterPorts{}}}
		ports, perr := freePorts(2 + 3*len(clusterNames))
		if perr != nil {
			return nil, perr
		}
		for i, name := range clusterNames {
			env.cfg.Clusters[name] = clusterPorts{APIServer: ports[3*i], EtcdClient: ports[3*i+1], EtcdPeer: ports[3*i+2]}
		}
		env.cfg.CrossplaneHealth = ports[len(ports)-2]
		env.cfg.CrossplaneMetric = ports[len(ports)-1]
	}
	// Paths of the tools may change between runs (another checkout, a rebuilt binary): the latest wins.
	if s.crossplaneBin != "" {
		env.cfg.CrossplaneBin = s.crossplaneBin
	}
	if s.crossplaneCRDs != "" {
		env.cfg.CrossplaneCRDs = s.crossplaneCRDs
	}
	if s.platformDir != "" {
		env.cfg.PlatformDir = s.platformDir
	}
	if err := os.MkdirAll(env.dir, 0o755); err != nil {
		return nil, err
	}
	for _, name := range clusterNames {
		if err := ensurePKI(env.clusterDir(name), name == controlPlane); err != nil {
			return nil, fmt.Errorf("certificates of %s: %w", name, err)
		}
	}
	raw, err := json.MarshalIndent(env.cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	return env, os.WriteFile(configPath(env.dir), raw, 0o644)
}

func (e *environment) clusterDir(name string) string { return filepath.Join(e.dir, name) }
func (e *environment) kubeconfig(name string) string {
	return filepath.Join(e.clusterDir(name), "kubeconfig")
}
func (e *environment) logPath(cluster, process string) string {
	return filepath.Join(e.clusterDir(cluster), process+".log")
}
func (e *environment) pidPath(cluster, process string) string {
	return filepath.Join(e.clusterDir(cluster), process+".pid")
}

func (e *environment) ports(name string) (clusterPorts, error) {
	p, ok := e.cfg.Clusters[name]
	if !ok {
		return p, fmt.Errorf("unknown cluster %q (want app or controlplane)", name)
	}
	return p, nil
}

// freePorts asks the kernel for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// recordedPorts is every port the env has recorded for its clusters, Crossplane and links.
func (e *environment) recordedPorts() map[int]bool {
	taken := map[int]bool{e.cfg.CrossplaneHealth: true, e.cfg.CrossplaneMetric: true}
	for _, p := range e.cfg.Clusters {
		taken[p.APIServer], taken[p.EtcdClient], taken[p.EtcdPeer] = true, true, true
	}
	for _, name := range e.links() {
		if info, err := e.readLink(name); err == nil {
			taken[info.Port], taken[info.ControlPort] = true, true
		}
	}
	return taken
}

func (e *environment) printShell() {
	for _, name := range clusterNames {
		fmt.Printf("export %s=%s\n", envVarName(name), shellQuote(e.kubeconfig(name)))
	}
	fmt.Printf("export CONTROLPLANE_LINK_KUBECONFIG=%s\n", shellQuote(e.linkKubeconfig(defaultLink)))
	fmt.Printf("export CLAIMSYNC_ENV_DIR=%s\n", shellQuote(e.dir))
	fmt.Printf("# front-proxy CA of the app cluster (aggregated API servers trust it): %s\n",
		filepath.Join(e.clusterDir("app"), "pki", "front-proxy-ca.crt"))
}

func envVarName(cluster string) string {
	if cluster == controlPlane {
		return "CONTROLPLANE_KUBECONFIG"
	}
	return "APP_KUBECONFIG"
}

func shellQuote(s string) string {
	out := "'"
	for _, r := range s {
		if r == '\'' {
			out += `'\''`
		} else {
			out += string(r)
		}
	}
	return out + "'"
}
