// Crossplane core on the control plane: its CRDs, the process itself (configured for a test env: no webhooks,
// no leader election, short intervals) and the example platform (XRDs and Compositions) it serves.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func (e *environment) startCrossplane() error {
	if e.cfg.CrossplaneBin == "" || e.cfg.CrossplaneCRDs == "" {
		return errors.New("the control plane needs --crossplane-bin and --crossplane-crds (e2e/env passes them)")
	}
	pidPath, logPath := e.pidPath(controlPlane, crossplaneProcess), e.logPath(controlPlane, crossplaneProcess)
	if _, alive := running(pidPath); alive {
		return nil
	}
	// Server-side: one of Crossplane's CRDs is too large for the client-side last-applied annotation.
	if err := e.kubectl(controlPlane, "apply", "--server-side", "--force-conflicts", "-f", e.cfg.CrossplaneCRDs); err != nil {
		return err
	}
	// Again until it holds: kubectl wait fails at once on a CRD that has no conditions yet (seen with v2's CRDs).
	if err := waitFor("Crossplane's CRDs", "", "", 60*time.Second, func() error {
		return e.kubectl(controlPlane, "wait", "--for=condition=Established", "--timeout=10s", "crd", "--all")
	}); err != nil {
		return err
	}
	if err := e.ensureNamespace(controlPlane, "crossplane-system"); err != nil {
		return err
	}
	// The function first: the platform's Compositions run it.
	if err := e.startFunction(); err != nil {
		return err
	}
	home := filepath.Join(e.clusterDir(controlPlane), "crossplane")
	for _, sub := range []string{"xpkg-cache", "xfn-cache"} {
		if err := os.MkdirAll(filepath.Join(home, sub), 0o755); err != nil {
			return err
		}
	}
	env := []string{
		"KUBECONFIG=" + e.kubeconfig(controlPlane),
		"POD_NAMESPACE=crossplane-system",
		"ENABLE_WEBHOOKS=false",
		"LEADER_ELECTION=false",
		"PACKAGE_RUNTIME=External",
		"TLS_CLIENT_CERTS_DIR=" + filepath.Join(home, "tls"),
		"XPKG_CACHE_DIR=" + filepath.Join(home, "xpkg-cache"),
		"XFN_CACHE_DIR=" + filepath.Join(home, "xfn-cache"),
		fmt.Sprintf("METRICS_PORT=%d", e.cfg.CrossplaneMetric),
		fmt.Sprintf("HEALTH_PROBE_PORT=%d", e.cfg.CrossplaneHealth),
	}
	args := []string{"core", "start", "--debug"}
	args = append(args, crossplaneTestFlags...)
	if err := spawn(pidPath, logPath, env, e.cfg.CrossplaneBin, args...); err != nil {
		return err
	}
	client, _, err := e.httpClient(controlPlane)
	if err != nil {
		return err
	}
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", e.cfg.CrossplaneHealth)
	if err := waitFor("crossplane", pidPath, logPath, 120*time.Second, func() error {
		return get(client, readyz, "")
	}); err != nil {
		return err
	}
	return e.applyPlatform()
}

// applyPlatform applies the example XRDs and Compositions and waits until Crossplane offers their claims.
func (e *environment) applyPlatform() error {
	if e.cfg.PlatformDir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(e.cfg.PlatformDir, "*.yaml"))
	if err != nil {
		return err
	}
	if e.cfg.CrossplaneVersion == "v2" {
		// The v2 APIs (apiextensions.crossplane.io/v2, namespaced XRs) after the legacy ones; v1.20 has no v2 API.
		v2, err := filepath.Glob(filepath.Join(e.cfg.PlatformDir, "v2", "*.yaml"))
		if err != nil {
			return err
		}
		sort.Strings(v2)
		sort.Strings(files)
		files = append(files, v2...)
	} else {
		sort.Strings(files)
	}
	for _, file := range files {
		if strings.HasPrefix(filepath.Base(file), "example") {
			continue
		}
		if err := e.kubectl(controlPlane, "apply", "--server-side", "--force-conflicts", "-f", file); err != nil {
			return err
		}
	}
	if err := waitFor("the example platform's claim kinds", "", "", 120*time.Second, func() error {
		// Only the example platform's XRDs: a test may leave one of its own half-deleted.
		return e.kubectl(controlPlane, "wait", "--for=condition=Offered", "--timeout=5s",
			"compositeresourcedefinitions.apiextensions.crossplane.io", "-l", "claimsync.dev/example-platform=true")
	}); err != nil || e.cfg.CrossplaneVersion != "v2" {
		return err
	}
	// A v2 XRD offers no claim: its XR kind is ready when Established.
	return waitFor("the example platform's namespaced XR kinds", "", "", 120*time.Second, func() error {
		return e.kubectl(controlPlane, "wait", "--for=condition=Established", "--timeout=5s",
			"compositeresourcedefinitions.apiextensions.crossplane.io", "-l", "claimsync.dev/example-platform=xr")
	})
}

func (e *environment) ensureNamespace(cluster, name string) error {
	if err := e.kubectl(cluster, "get", "namespace", name); err == nil {
		return nil
	}
	return e.kubectl(cluster, "create", "namespace", name)
}

// crossplaneTestFlags shorten Crossplane's intervals so that a claim is Ready in seconds, not minutes.
var crossplaneTestFlags = []string{"--poll-interval=1s", "--sync-interval=30s"}
