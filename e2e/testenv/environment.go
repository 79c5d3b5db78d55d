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
	"slices"
	"strings"
)

// The clusters: two app clusters (app2 for tests that need a second, independent one) and the control plane.
// They start in parallel.
var clusterNames = []string{"app", "app2", "controlplane"}

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
	FunctionBin      string                  `json:"functionBin"`
	FunctionPort     int                     `json:"functionPort"`
	// CrossplaneVersion is v2 or v1.20 (e2e/env's CLAIMSYNC_CROSSPLANE); an env made before it was recorded ran
	// v1.20.
	CrossplaneVersion string `json:"crossplaneVersion,omitempty"`
}

type setup struct {
	crossplaneBin, crossplaneCRDs, crossplaneVersion, platformDir, functionBin string
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

// prepare loads the env in dir, or lays out a new one: free ports, certificates, tokens. A cluster that an env
// made by an older testenv lacks (app2) gets its ports now.
func prepare(dir string, s setup) (*environment, error) {
	env, err := load(dir)
	if err != nil {
		abs, aerr := filepath.Abs(dir)
		if aerr != nil {
			return nil, aerr
		}
		env = &environment{dir: abs, cfg: config{Clusters: map[string]clusterPorts{}}}
	}
	for _, name := range clusterNames {
		if _, ok := env.cfg.Clusters[name]; ok {
			continue
		}
		ports, perr := env.newPorts(3)
		if perr != nil {
			return nil, perr
		}
		env.cfg.Clusters[name] = clusterPorts{APIServer: ports[0], EtcdClient: ports[1], EtcdPeer: ports[2]}
	}
	if env.cfg.CrossplaneHealth == 0 {
		ports, perr := env.newPorts(2)
		if perr != nil {
			return nil, perr
		}
		env.cfg.CrossplaneHealth, env.cfg.CrossplaneMetric = ports[0], ports[1]
	}
	if env.cfg.FunctionPort == 0 {
		ports, perr := env.newPorts(1)
		if perr != nil {
			return nil, perr
		}
		env.cfg.FunctionPort = ports[0]
	}
	// An env keeps its Crossplane: the control plane's objects are those of one version.
	if env.cfg.CrossplaneVersion == "" && env.cfg.CrossplaneBin != "" {
		env.cfg.CrossplaneVersion = "v1.20"
	}
	if s.crossplaneVersion != "" {
		if env.cfg.CrossplaneVersion != "" && env.cfg.CrossplaneVersion != s.crossplaneVersion {
			return nil, fmt.Errorf("the env in %s runs Crossplane %s, not %s: `e2e/env down --purge` it first",
				env.dir, env.cfg.CrossplaneVersion, s.crossplaneVersion)
		}
		env.cfg.CrossplaneVersion = s.crossplaneVersion
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
	if s.functionBin != "" {
		env.cfg.FunctionBin = s.functionBin
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
		return p, fmt.Errorf("unknown cluster %q (want one of %s)", name, strings.Join(clusterNames, ", "))
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

// newPorts picks n free ports that no cluster or link of the env has recorded.
func (e *environment) newPorts(n int) ([]int, error) {
	taken := e.recordedPorts()
	for range 20 {
		ports, err := freePorts(n)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(ports, func(p int) bool { return taken[p] }) {
			return ports, nil
		}
	}
	return nil, errors.New("no free ports that the env has not recorded already")
}

// recordedPorts is every port the env has recorded for its clusters, Crossplane, its function and links.
func (e *environment) recordedPorts() map[int]bool {
	taken := map[int]bool{e.cfg.CrossplaneHealth: true, e.cfg.CrossplaneMetric: true, e.cfg.FunctionPort: true}
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
	fmt.Printf("# front-proxy CAs of the app clusters (aggregated API servers trust them): %s %s\n",
		filepath.Join(e.clusterDir("app"), "pki", "front-proxy-ca.crt"),
		filepath.Join(e.clusterDir("app2"), "pki", "front-proxy-ca.crt"))
}

// envVarName is the variable that names a cluster's kubeconfig: APP_KUBECONFIG, APP2_KUBECONFIG, ...
func envVarName(cluster string) string {
	return strings.ToUpper(cluster) + "_KUBECONFIG"
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
