// Command testenv runs the test environment of claimsync: two app clusters and a control plane, each a real
// kube-apiserver (with an embedded etcd) plus a kube-controller-manager, and Crossplane core on the control
// plane. People use it through e2e/env; the Rust integration tests call the same script.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

const usage = `usage: testenv <command> [flags]

commands for people and tests:
  up [--owner-pid PID]      start every cluster and Crossplane (reusing what already runs); print the kubeconfig paths
  down [--purge]            stop every process of the env; --purge also removes its folder
  stop <cluster>            stop one cluster (app, app2 or controlplane) and what runs against it, keeping its data
  start <cluster>           start a stopped cluster again on the same ports, with its data intact
  status                    print each process of the env and whether it runs
  env                       print the shell lines that name the kubeconfigs
  link add|cut|reset|restore|remove NAME, link delay MS NAME, link status
                            a named, breakable path to the control plane (testenv link, for more)

internal (started by up):
  serve-apiserver --cluster NAME
  serve-controller-manager --cluster NAME
  serve-link --name NAME
  watch-owner --pid PID

every command takes --dir DIR (default $CLAIMSYNC_ENV_DIR, else ./.env)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	// `stop controlplane --dir X`, `link delay 200 NAME`: positional arguments come before the flags.
	var positional []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		positional, args = append(positional, args[0]), args[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	defaultDir := os.Getenv("CLAIMSYNC_ENV_DIR")
	if defaultDir == "" {
		defaultDir = ".env"
	}
	dir := fs.String("dir", defaultDir, "the env's folder")
	cluster := fs.String("cluster", "", "app, app2 or controlplane")
	ownerPID := fs.Int("owner-pid", 0, "stop the env when this process exits")
	purge := fs.Bool("purge", false, "remove the env's folder after stopping it")
	crossplaneBin := fs.String("crossplane-bin", os.Getenv("CLAIMSYNC_CROSSPLANE_BIN"), "the crossplane binary")
	crossplaneVersion := fs.String("crossplane-version", os.Getenv("CLAIMSYNC_CROSSPLANE"), "v2 or v1.20")
	crossplaneCRDs := fs.String("crossplane-crds", os.Getenv("CLAIMSYNC_CROSSPLANE_CRDS"), "folder of Crossplane's CRDs")
	functionBin := fs.String("function-bin", os.Getenv("CLAIMSYNC_FUNCTION_BIN"), "the env's composition function")
	platformDir := fs.String("platform", os.Getenv("CLAIMSYNC_PLATFORM_DIR"), "folder of the example platform (XRDs, Compositions)")
	pid := fs.Int("pid", 0, "the owner process (watch-owner)")
	linkName := fs.String("name", "", "the link (serve-link)")
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}

	var err error
	switch cmd {
	case "up", "stop", "start":
		// down takes the lock itself, since the owner watch calls it too.
		unlock, lerr := lockLifecycle(*dir)
		if lerr != nil {
			fmt.Fprintf(os.Stderr, "testenv %s: %v\n", cmd, lerr)
			os.Exit(1)
		}
		defer unlock()
	}
	switch cmd {
	case "up":
		env, lerr := prepare(*dir, setup{
			crossplaneBin: *crossplaneBin, crossplaneCRDs: *crossplaneCRDs, crossplaneVersion: *crossplaneVersion,
			platformDir: *platformDir, functionBin: *functionBin,
		})
		if lerr != nil {
			err = lerr
			break
		}
		err = env.up(*ownerPID)
	case "down":
		err = down(*dir, *purge)
	case "stop", "start":
		name := *cluster
		if name == "" && len(positional) == 1 {
			name = positional[0]
		}
		env, lerr := load(*dir)
		if lerr != nil {
			err = lerr
			break
		}
		if cmd == "stop" {
			err = env.stopCluster(name)
		} else {
			err = env.startCluster(name)
		}
	case "status":
		var env *environment
		if env, err = load(*dir); err == nil {
			env.printStatus()
		}
	case "env":
		var env *environment
		if env, err = load(*dir); err == nil {
			env.printShell()
		}
	case "link":
		err = runLink(*dir, positional)
	case "serve-link":
		err = serveLink(*dir, *linkName)
	case "serve-apiserver":
		err = serveAPIServer(*dir, *cluster)
	case "serve-controller-manager":
		err = serveControllerManager(*dir, *cluster)
	case "watch-owner":
		err = watchOwner(*dir, *pid)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv %s: %v\n", cmd, err)
		os.Exit(1)
	}
}
