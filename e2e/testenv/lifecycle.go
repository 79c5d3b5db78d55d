// up, down, stop and start of the whole env and of one cluster, in dependency order: API server, then
// controller manager, then (on the control plane) Crossplane and the example platform.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	apiserverProcess  = "apiserver"
	controllerProcess = "controller-manager"
	crossplaneProcess = "crossplane"
	functionProcess   = "function"
	ownerWatchProcess = "owner-watch"
)

// eachCluster runs f for every cluster at once and returns their errors.
func eachCluster(f func(name string) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(clusterNames))
	for i, name := range clusterNames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(name)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (e *environment) up(ownerPID int) error {
	start := time.Now()
	if err := eachCluster(e.startCluster); err != nil {
		return err
	}
	if err := e.startLinks(); err != nil {
		return err
	}
	if ownerPID > 0 {
		pidPath := filepath.Join(e.dir, ownerWatchProcess+".pid")
		if _, alive := running(pidPath); !alive {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if err := spawn(pidPath, filepath.Join(e.dir, ownerWatchProcess+".log"), nil, self,
				"watch-owner", "--dir", e.dir, "--pid", fmt.Sprint(ownerPID)); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(os.Stderr, "testenv: up in %s (%s)\n", time.Since(start).Round(100*time.Millisecond), e.dir)
	e.printShell()
	return nil
}

func (e *environment) startCluster(name string) error {
	ports, err := e.ports(name)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	apiPid, apiLog := e.pidPath(name, apiserverProcess), e.logPath(name, apiserverProcess)
	if _, alive := running(apiPid); !alive {
		if err := spawn(apiPid, apiLog, nil, self, "serve-apiserver", "--dir", e.dir, "--cluster", name); err != nil {
			return err
		}
	}
	if err := e.writeKubeconfig(name, ports); err != nil {
		return err
	}
	client, token, err := e.httpClient(name)
	if err != nil {
		return err
	}
	readyz := fmt.Sprintf("https://127.0.0.1:%d/readyz", ports.APIServer)
	if err := waitFor(name+" API server", apiPid, apiLog, 120*time.Second, func() error {
		return get(client, readyz, token)
	}); err != nil {
		return err
	}
	kcmPid, kcmLog := e.pidPath(name, controllerProcess), e.logPath(name, controllerProcess)
	if _, alive := running(kcmPid); !alive {
		if err := spawn(kcmPid, kcmLog, nil, self, "serve-controller-manager", "--dir", e.dir, "--cluster", name); err != nil {
			return err
		}
	}
	if name == controlPlane {
		return e.startCrossplane()
	}
	return nil
}

// stopCluster stops everything that runs against a cluster, then its API server; the data stays. It returns
// once they have exited and the cluster's ports are free, so that `start` can bind them again at once.
func (e *environment) stopCluster(name string) error {
	ports, err := e.ports(name)
	if err != nil {
		return err
	}
	for _, process := range []string{crossplaneProcess, functionProcess, controllerProcess, apiserverProcess} {
		if err := stop(e.pidPath(name, process), 30*time.Second); err != nil {
			return fmt.Errorf("stop %s of %s: %w", process, name, err)
		}
	}
	free := []int{ports.APIServer, ports.EtcdClient, ports.EtcdPeer}
	if name == controlPlane {
		free = append(free, e.cfg.CrossplaneHealth, e.cfg.CrossplaneMetric, e.cfg.FunctionPort)
	}
	return waitPortsFree(free, 30*time.Second)
}

// down stops every process of the env and returns once all have exited and their ports are free.
func down(dir string, purge bool) error {
	env, err := load(dir)
	if err != nil {
		if purge {
			return os.RemoveAll(dir)
		}
		return err
	}
	// First the owner watch, unless this is it: a watch whose owner has gone may be running a down of its own,
	// and two downs at once must not leave the env half-stopped.
	watchPid := filepath.Join(env.dir, ownerWatchProcess+".pid")
	if pid, _, ok := readPid(watchPid); !ok || pid != os.Getpid() {
		if err := stop(watchPid, 5*time.Second); err != nil {
			return err
		}
	}
	unlock, err := lockLifecycle(env.dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := errors.Join(eachCluster(env.stopCluster), env.stopLinks()); err != nil {
		return err
	}
	var ports []int
	for port := range env.recordedPorts() {
		if port > 0 {
			ports = append(ports, port)
		}
	}
	sort.Ints(ports)
	if err := waitPortsFree(ports, 30*time.Second); err != nil {
		return err
	}
	_ = removePid(watchPid)
	if purge {
		return os.RemoveAll(env.dir)
	}
	return nil
}

// lockLifecycle serializes up, down, start and stop of one env (e.g. a user's down and the owner watch's).
func lockLifecycle(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return lockFile(filepath.Join(dir, "lifecycle.lock"))
}

func (e *environment) printStatus() {
	for _, name := range clusterNames {
		for _, process := range []string{apiserverProcess, controllerProcess, functionProcess, crossplaneProcess} {
			if name != controlPlane && (process == crossplaneProcess || process == functionProcess) {
				continue
			}
			pid, alive := running(e.pidPath(name, process))
			state := "stopped"
			if alive {
				state = fmt.Sprintf("running (pid %d)", pid)
			}
			fmt.Printf("%-13s %-19s %s\n", name, process, state)
		}
	}
	e.printLinks()
}

func (e *environment) writeKubeconfig(name string, ports clusterPorts) error {
	kubeconfig, err := e.kubeconfigText(name, ports.APIServer, name)
	if err != nil {
		return err
	}
	return os.WriteFile(e.kubeconfig(name), kubeconfig, 0o600)
}

// kubeconfigText is an admin kubeconfig of a cluster that reaches it on port (its own, or a link's).
func (e *environment) kubeconfigText(cluster string, port int, context string) ([]byte, error) {
	dir := e.clusterDir(cluster)
	ca, err := os.ReadFile(filepath.Join(pkiDir(dir), "ca.crt"))
	if err != nil {
		return nil, err
	}
	token, err := readToken(dir)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: https://127.0.0.1:%[2]d
    certificate-authority-data: %[3]s
users:
- name: %[1]s-admin
  user:
    token: %[4]s
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: %[1]s-admin
    namespace: default
current-context: %[1]s
`, context, port, base64(ca), token), nil
}

// httpClient trusts the cluster's CA and returns the admin token.
func (e *environment) httpClient(name string) (*http.Client, string, error) {
	dir := e.clusterDir(name)
	ca, err := os.ReadFile(filepath.Join(pkiDir(dir), "ca.crt"))
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	token, err := readToken(dir)
	if err != nil {
		return nil, "", err
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	return client, token, nil
}

func get(client *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// kubectl runs kubectl against one cluster of the env.
func (e *environment) kubectl(cluster string, args ...string) error {
	// A cache of its own: discovery cached while the env starts (before Crossplane offers its claim kinds)
	// would otherwise hide those kinds from a user's `kubectl get claim` for hours.
	global := []string{"--kubeconfig", e.kubeconfig(cluster), "--cache-dir", filepath.Join(e.dir, "kubectl-cache")}
	cmd := exec.Command("kubectl", append(global, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
